from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.delivery.worker import ChannelWorkerSettings
from pulse.settings import SmtpSettings


class EmailWorkerSettings(ChannelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_EMAIL_WORKER_", env_file=".env", extra="ignore")

    smtp: SmtpSettings = Field(default_factory=SmtpSettings, description="The SMTP relay.")
    metrics_port: int = Field(9101, description="Port of the /metrics endpoint.")
