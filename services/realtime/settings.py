"""The realtime service's settings, read from `PULSE_REALTIME_*` (and the shared blocks' variables)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulse.settings import BrokerSettings, DatabaseSettings, JwtSettings, PresenceSettings


class RealtimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_REALTIME_", env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    jwt: JwtSettings = Field(default_factory=JwtSettings, description="Verifies end-user tokens.")
    presence: PresenceSettings = Field(
        default_factory=PresenceSettings, description="Heartbeat and staleness of connection rows."
    )
    host: str = Field("127.0.0.1", description="Interface the realtime service listens on.")
    port: int = Field(8010, ge=1, le=65535, description="Port of the WebSocket, /demo and /metrics.")
    max_connections_per_user: int = Field(
        5, ge=1, description="Concurrent connections of one user, across every realtime process."
    )
    max_message_bytes: int = Field(
        4096, ge=256, description="A larger client message closes the connection with code 1009."
    )
    idle_timeout_seconds: float = Field(
        60.0, gt=0, description="A client that sends nothing for this long is disconnected (code 4408)."
    )
    send_queue_size: int = Field(
        256,
        ge=1,
        description="Messages waiting to go out to one client; a client that lets more pile up is too slow "
        "and is disconnected (code 1008), so that it holds up nobody else.",
    )
    compression: bool = Field(
        False,
        description="Offer permessage-deflate: its two zlib streams take ~40 KiB per connection for the "
        "connection's life (half of what an idle one costs), to shrink messages mostly under 1 KiB.",
    )
    missed_limit: int = Field(
        100, ge=1, le=1000, description="Unread items sent as `missed_notifications` on connect."
    )
