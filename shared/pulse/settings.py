"""Settings shared by every service: each block reads its own `PULSE_<BLOCK>_*` variables.

Services compose these blocks into their own settings class, so one variable (say
`PULSE_DATABASE_URL`) means the same thing everywhere.
"""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


def split_commas(value: object) -> object:
    """A list setting given as `a,b,c` in the environment (fields marked NoDecode) becomes a list."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class DatabaseSettings(BaseSettings):
    model_config = _config("PULSE_DATABASE_")

    url: str = Field(
        "postgresql+psycopg://postgres@localhost:5432/pulse",
        description="SQLAlchemy URL of the PostgreSQL database (psycopg 3 driver).",
    )
    pool_size: int = Field(20, description="Connections kept open per process (and at most 5 more at peaks).")
    connect_timeout_seconds: float = Field(
        3.0, description="How long to wait for a new connection before giving up."
    )
    statement_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description="PostgreSQL cancels any statement running longer (0: no limit), so that one "
        "runaway query cannot hold a connection and its locks for ever.",
    )


class BrokerSettings(BaseSettings):
    model_config = _config("PULSE_BROKER_")

    url: str = Field("amqp://guest:guest@localhost:5672//", description="AMQP URL of RabbitMQ.")
    connect_timeout_seconds: float = Field(
        2.0, description="How long a publish waits to connect before the outbox takes over."
    )
    confirm_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="How long a publish waits for RabbitMQ's confirms (e.g. under a memory or disk "
        "alarm) before the outbox takes over.",
    )


class SmtpSettings(BaseSettings):
    model_config = _config("PULSE_SMTP_")

    host: str = Field("127.0.0.1", description="SMTP relay host (default: the Pulse sandbox).")
    port: int = Field(1025, description="SMTP relay port.")
    username: str | None = Field(None, description="SMTP login user; no login when empty.")
    password: SecretStr | None = Field(None, description="SMTP login password.")
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS before sending.")
    use_tls: bool = Field(False, description="Connect with implicit TLS (SMTPS, usually port 465).")
    from_address: str = Field(
        "Pulse <no-reply@pulse.localhost>",
        validation_alias="PULSE_SMTP_FROM",
        description="The From header of every email.",
    )
    timeout_seconds: float = Field(10.0, description="Socket timeout of one SMTP conversation.")
    message_id_domain: str = Field(
        "pulse.localhost", description="Domain part of the stable Message-ID header."
    )
    secondary_host: str | None = Field(
        None, description="Host of a secondary SMTP relay to fail over to; no failover when empty."
    )
    secondary_port: int | None = Field(
        None, description="Port of the secondary relay (default: the primary's)."
    )
    secondary_username: str | None = Field(
        None, description="SMTP login user of the secondary relay (default: the primary's)."
    )
    secondary_password: SecretStr | None = Field(
        None, description="SMTP login password of the secondary relay (default: the primary's)."
    )
    secondary_starttls: bool | None = Field(
        None, description="STARTTLS towards the secondary relay (default: the primary's setting)."
    )
    secondary_use_tls: bool | None = Field(
        None, description="Implicit TLS towards the secondary relay (default: the primary's setting)."
    )

    def secondary(self) -> "SmtpSettings | None":
        """The secondary relay as settings of its own, if one is configured."""
        if not self.secondary_host:
            return None

        def pick(value: object, default: object) -> object:
            return default if value is None else value

        return self.model_copy(
            update={
                "host": self.secondary_host,
                "port": pick(self.secondary_port, self.port),
                "username": pick(self.secondary_username, self.username),
                "password": pick(self.secondary_password, self.password),
                "starttls": pick(self.secondary_starttls, self.starttls),
                "use_tls": pick(self.secondary_use_tls, self.use_tls),
                "secondary_host": None,
            }
        )


class TwilioSettings(BaseSettings):
    model_config = _config("PULSE_TWILIO_")

    base_url: str = Field(
        "http://127.0.0.1:8025", description="Base URL of the Twilio API (default: the Pulse sandbox)."
    )
    account_sid: str = Field("AC" + "0" * 32, description="Twilio account SID (HTTP basic auth user).")
    auth_token: SecretStr = Field(SecretStr("sandbox-token"), description="Twilio auth token.")
    from_number: str = Field(
        "+15005550006",
        validation_alias="PULSE_TWILIO_FROM",
        description="Sender number (E.164); WhatsApp sends from `whatsapp:<this number>`.",
    )
    timeout_seconds: float = Field(10.0, description="Connect and read timeout of one API request.")
    secondary_base_url: str | None = Field(
        None, description="Base URL of a secondary account to fail over to; no failover when empty."
    )
    secondary_account_sid: str | None = Field(
        None, description="SID of the secondary account (default: the primary's)."
    )
    secondary_auth_token: SecretStr | None = Field(
        None, description="Auth token of the secondary account (default: the primary's)."
    )

    def secondary(self) -> "TwilioSettings | None":
        """The secondary account as settings of its own, if one is configured."""
        if not self.secondary_base_url:
            return None
        return self.model_copy(
            update={
                "base_url": self.secondary_base_url,
                "account_sid": self.secondary_account_sid or self.account_sid,
                "auth_token": self.secondary_auth_token or self.auth_token,
                "secondary_base_url": None,
            }
        )


class FcmSettings(BaseSettings):
    model_config = _config("PULSE_FCM_")

    base_url: str = Field(
        "http://127.0.0.1:8025", description="Base URL of the FCM HTTP v1 API (default: the Pulse sandbox)."
    )
    project_id: str = Field("pulse-sandbox", description="Firebase project id (in the send URL).")
    access_token: SecretStr = Field(
        SecretStr("sandbox-token"),
        description="Static OAuth2 bearer token (development); unused when `credentials_file` is set.",
    )
    credentials_file: str | None = Field(
        None,
        description="Google service-account JSON file to mint access tokens from "
        "(needs the optional `google-auth` package).",
    )
    timeout_seconds: float = Field(10.0, description="Connect and read timeout of one API request.")
    secondary_base_url: str | None = Field(
        None, description="Base URL of a secondary FCM project to fail over to; no failover when empty."
    )
    secondary_project_id: str | None = Field(
        None, description="Firebase project id of the secondary (default: the primary's)."
    )
    secondary_access_token: SecretStr | None = Field(
        None, description="Static bearer token of the secondary (default: the primary's)."
    )

    def secondary(self) -> "FcmSettings | None":
        """The secondary project as settings of its own, if one is configured."""
        if not self.secondary_base_url:
            return None
        return self.model_copy(
            update={
                "base_url": self.secondary_base_url,
                "project_id": self.secondary_project_id or self.project_id,
                "access_token": self.secondary_access_token or self.access_token,
                "secondary_base_url": None,
            }
        )


class WebhookSettings(BaseSettings):
    model_config = _config("PULSE_WEBHOOK_")

    allowlist: str = Field(
        "",
        description="Comma-separated hosts, addresses or CIDR networks exempt from the SSRF guard, a host "
        "or address optionally as `host:port` to exempt that port only (e.g. `127.0.0.1:8025,localhost:8025` "
        "to reach the sandbox); by default only public addresses are called.",
    )
    connect_timeout_seconds: float = Field(10.0, description="How long to wait to connect to a webhook URL.")
    read_timeout_seconds: float = Field(
        10.0, description="How long to wait for each part of a webhook URL's answer."
    )
    deadline_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest a whole webhook request may take, connecting to the last byte read; keep it "
        "well under the worker's claim lease, or a slow receiver gets the webhook twice.",
    )
    secret_cache_seconds: float = Field(
        5.0, description="How long a worker remembers a tenant's signing secret (rotation takes this long)."
    )


# What PULSE_JWT_SECRET is when nothing sets it: fine on a laptop, refused in production (anyone
# reading this file could mint end-user tokens).
DEVELOPMENT_JWT_SECRET = "pulse-development-jwt-secret-change-me-0123456789"  # noqa: S105


class JwtSettings(BaseSettings):
    model_config = _config("PULSE_JWT_")

    secret: SecretStr = Field(
        SecretStr(DEVELOPMENT_JWT_SECRET),
        min_length=32,
        description="Signs and verifies end-user tokens (HS256), on the gateway and every realtime "
        "process alike. `make run` generates one (kept in var/jwt-secret) when none is set.",
    )


class PresenceSettings(BaseSettings):
    """How realtime connections are kept alive in PostgreSQL: the realtime processes refresh theirs, and
    the gateway's presence and the per-user limit count only fresh ones."""

    model_config = _config("PULSE_REALTIME_")

    heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often a realtime process refreshes the rows of its connections."
    )
    stale_after_seconds: float = Field(
        30.0,
        gt=0,
        description="A connection row not refreshed for this long belongs to a process that died: it "
        "no longer counts (keep it a few heartbeats long).",
    )
