from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pulse.rate_limits.service import MAX_WINDOW_SECONDS
from pulse.scheduling.quiet_hours import QuietHours
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.vocabulary import Channel


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_", env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    api_host: str = Field("127.0.0.1", description="Interface the gateway listens on.")
    api_port: int = Field(8000, description="Port of the gateway (HTTP API and /metrics).")
    api_workers: int = Field(1, description="Gateway processes sharing the port (uvicorn workers).")
    enable_docs: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    max_body_bytes: int = Field(256 * 1024, description="Larger request bodies are refused with 413.")
    enabled_channels: Annotated[list[Channel], NoDecode] = Field(
        default=[Channel.EMAIL, Channel.SMS, Channel.WHATSAPP, Channel.PUSH, Channel.WEBHOOK],
        description="Channels this deployment delivers (comma-separated); others are refused with 422.",
    )
    auth_cache_seconds: float = Field(
        30.0, description="How long a verified API key is remembered (revocation takes up to this long)."
    )
    quiet_hours: str = Field(
        "22:00-08:00",
        description="Quiet hours in recipients' local time (`HH:MM-HH:MM` or `off`); tenants may override.",
    )
    webhook_allowlist: str = Field(
        "",
        description="Hosts, addresses or CIDRs exempt from the webhook SSRF guard (comma-separated; "
        "`host:port` exempts one port only).",
    )
    rate_limit: int = Field(
        10,
        ge=0,
        description="Sends per (tenant, user id or recipient, channel) per window (0: no limit); "
        "tenants may override.",
    )
    rate_limit_window_seconds: int = Field(
        60, ge=1, le=MAX_WINDOW_SECONDS, description="The rate limit's window."
    )
    publish_grace_seconds: float = Field(
        5.0, description="How long the outbox sweep leaves a new notification to the gateway's own publish."
    )

    @field_validator("quiet_hours")
    @classmethod
    def _valid_quiet_hours(cls, value: str) -> str:
        QuietHours.parse(value)
        return value

    @field_validator("enabled_channels", mode="before")
    @classmethod
    def _split_channels(cls, value: object) -> object:
        return (
            [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        )
