from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.delivery.worker import ChannelWorkerSettings
from pulse.settings import TwilioSettings


class SmsWorkerSettings(ChannelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_SMS_WORKER_", env_file=".env", extra="ignore")

    twilio: TwilioSettings = Field(
        default_factory=TwilioSettings, description="The Twilio account(s) (primary, optional secondary)."
    )
    metrics_port: int = Field(9102, description="Port of the /metrics endpoint.")
