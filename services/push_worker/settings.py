from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.delivery.worker import ChannelWorkerSettings
from pulse.settings import FcmSettings


class PushWorkerSettings(ChannelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_PUSH_WORKER_", env_file=".env", extra="ignore")

    fcm: FcmSettings = Field(default_factory=FcmSettings, description="The Firebase project (FCM HTTP v1).")
    metrics_port: int = Field(9103, description="Port of the /metrics endpoint.")
