from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulse.delivery.retry import RetrySettings
from pulse.settings import BrokerSettings, DatabaseSettings, TwilioSettings


class SmsWorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_SMS_WORKER_", env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    twilio: TwilioSettings = Field(
        default_factory=TwilioSettings, description="The Twilio account(s) (primary, optional secondary)."
    )
    retries: RetrySettings = Field(default_factory=RetrySettings, description="Retry plans per priority.")
    concurrency: int = Field(
        16, description="Threads sending in parallel (sharing one HTTP connection pool)."
    )
    prefetch_multiplier: int = Field(4, description="Messages reserved per thread ahead of time.")
    claim_lease_seconds: int = Field(
        60, description="How long a send may take before another worker may claim the notification."
    )
    circuit_failures: int = Field(
        5, description="Consecutive transient failures that open a Twilio account's circuit."
    )
    circuit_failure_rate: float = Field(0.5, description="Failure share of the last 20 sends that opens it.")
    circuit_cooldown_seconds: float = Field(
        30.0, description="How long an open circuit waits before a probe."
    )
    metrics_host: str = Field("0.0.0.0", description="Interface of the /metrics endpoint.")
    metrics_port: int = Field(9102, description="Port of the /metrics endpoint.")
