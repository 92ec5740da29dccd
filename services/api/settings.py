from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from pulse.notifications.acceptance import AcceptanceSettings
from pulse.settings import BrokerSettings, DatabaseSettings, JwtSettings, PresenceSettings, split_commas


class ApiSettings(AcceptanceSettings):
    """The gateway's own settings, and the acceptance rules it shares with the scheduler."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    jwt: JwtSettings = Field(
        default_factory=JwtSettings,
        description="The secret end-user tokens are signed with (PULSE_JWT_SECRET).",
    )
    presence: PresenceSettings = Field(
        default_factory=PresenceSettings, description="When a realtime connection no longer counts."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        ["http://localhost:8010", "http://127.0.0.1:8010"],
        description="Origins whose pages may call the end-user routes (/v1/auth/token, /v1/inbox) from a "
        "browser, comma-separated: by default the realtime service's demo page.",
    )
    api_host: str = Field("127.0.0.1", description="Interface the gateway listens on.")
    api_port: int = Field(8000, description="Port of the gateway (HTTP API and /metrics).")
    api_workers: int = Field(1, description="Gateway processes sharing the port (uvicorn workers).")
    enable_docs: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    max_body_bytes: int = Field(256 * 1024, description="Larger request bodies are refused with 413.")
    auth_cache_seconds: float = Field(
        2.0,
        ge=0,
        le=5,
        description="How long a verified API key (with its tenant's settings) is remembered: a revoked "
        "key is refused by every gateway within this long, so at most 5 s.",
    )
    publish_grace_seconds: float = Field(
        5.0, description="How long the outbox sweep leaves a new notification to the gateway's own publish."
    )
    intake_threads: int = Field(
        4,
        ge=1,
        description="Threads accepting sends, each committing whatever requests are waiting together.",
    )
    keep_alive_timeout_seconds: int = Field(
        75,
        gt=0,
        description="How long an idle client connection is kept open: above the idle timeouts of common "
        "HTTP clients and load balancers (60 s), so that the gateway is never the side closing a "
        "connection a client is about to reuse.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return split_commas(value)
