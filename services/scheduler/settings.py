from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulse.settings import BrokerSettings, DatabaseSettings


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_SCHEDULER_", env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    tick_seconds: float = Field(0.5, description="Pause between two rounds of the scheduler's jobs.")
    batch_size: int = Field(500, description="Rows one job handles per transaction.")
    retry_overdue_seconds: float = Field(
        60.0, description="A retry this late is published again (its delayed message was lost)."
    )
    dead_letter_reconcile_seconds: float = Field(
        10.0, description="How often dead-letter queues are checked against PostgreSQL (after replays)."
    )
    retention_days: float = Field(30, description="Finished notifications older than this are deleted.")
    retention_every_seconds: float = Field(60, description="How often the retention job runs.")
    metrics_host: str = Field("0.0.0.0", description="Interface of the /metrics endpoint.")
    metrics_port: int = Field(9105, description="Port of the /metrics endpoint.")
