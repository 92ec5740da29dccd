from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulse.settings import BrokerSettings, DatabaseSettings


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_", env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    wait_seconds: float = Field(60.0, description="How long `init` waits for PostgreSQL and RabbitMQ.")
