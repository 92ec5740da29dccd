from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.delivery.worker import ChannelWorkerSettings
from pulse.settings import WebhookSettings


class WebhookWorkerSettings(ChannelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_WEBHOOK_WORKER_", env_file=".env", extra="ignore")

    webhook: WebhookSettings = Field(
        default_factory=WebhookSettings, description="SSRF allowlist, timeouts, secret caching."
    )
    metrics_port: int = Field(9104, description="Port of the /metrics endpoint.")
