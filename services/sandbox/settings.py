"""Sandbox configuration, read from ``PULSE_SANDBOX_*`` environment variables or ``.env``."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_SANDBOX_", env_file=".env", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface both the SMTP and HTTP servers bind to.")
    smtp_port: int = Field(default=1025, ge=1, le=65535, description="Port of the fake SMTP relay.")
    smtp_secondary_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of a second SMTP relay (provider `smtp-secondary`, fault account `secondary`); "
        "off when unset.",
    )
    http_port: int = Field(default=8025, ge=1, le=65535, description="Port of the inbox UI and JSON API.")
    max_messages: int = Field(
        default=200_000, ge=1, description="Messages kept in memory; the oldest are dropped beyond this."
    )
