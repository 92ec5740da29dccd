"""Settings shared by every service: each block reads its own `PULSE_<BLOCK>_*` variables.

Services compose these blocks into their own settings class, so one variable (say
`PULSE_DATABASE_URL`) means the same thing everywhere. `pulse.startup.load_settings` reads a service's
settings and refuses, in production, the development defaults it would use.
"""

from enum import StrEnum
from typing import Any, ClassVar, Self
from urllib.parse import quote

from kombu.utils.url import url_to_parts
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from pulse.send_rate import OptionalSendRate


def _config(prefix: str) -> SettingsConfigDict:
    # "__" reaches into a nested block: PULSE_SMTP_SECONDARY__HOST is `secondary.host` of PULSE_SMTP_.
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore", env_nested_delimiter="__")


def split_commas(value: object) -> object:
    """A list setting given as `a,b,c` in the environment (fields marked NoDecode) becomes a list."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def reveal(value: object) -> Any:
    """A SecretStr's value (anything else as it is)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class EnvironmentSettings(BaseSettings):
    model_config = _config("PULSE_")

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="`production` makes every service refuse to start with a development default "
        "(the sandbox as a provider, its tokens, guest/guest on RabbitMQ, ...).",
    )


class _UrlOrParts(BaseSettings):
    """A server's URL, given whole (`url`) or as parts (`host`, `port`, `user`, `password` and the
    database or vhost); parts not given take the default URL's. Once read, both agree."""

    PARTS: ClassVar[tuple[str, ...]]
    DEFAULT_URL: ClassVar[str]

    @classmethod
    def _build(cls, parts: dict[str, Any]) -> str:
        raise NotImplementedError

    @classmethod
    def _split(cls, url: str) -> dict[str, Any]:
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _url_or_parts(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = {name: reveal(data[name]) for name in cls.PARTS if data.get(name) not in (None, "")}
        if given and data.get("url") not in (None, ""):
            prefix = str(cls.model_config.get("env_prefix", ""))
            names = "/".join(prefix + name.upper() for name in given)
            raise ValueError(f"{prefix}URL and {names} are both set: give the URL or its parts, not both")
        if given:
            url = cls._build({**cls._split(cls.DEFAULT_URL), **given})
        else:
            url = data.get("url") or cls.DEFAULT_URL
        return {**data, **cls._split(url), "url": url}


DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@localhost:5432/pulse"


class DatabaseSettings(_UrlOrParts):
    model_config = _config("PULSE_DATABASE_")
    PARTS = ("host", "port", "user", "password", "name")
    DEFAULT_URL = DEFAULT_DATABASE_URL

    url: str = Field(
        DEFAULT_DATABASE_URL,
        repr=False,  # it may carry the password
        description="SQLAlchemy URL of the PostgreSQL database (psycopg 3 driver); or give its parts.",
    )
    host: str | None = Field(None, description="Database server host (instead of the URL).")
    port: int | None = Field(None, description="Database server port (instead of the URL).")
    user: str | None = Field(None, description="Database user (instead of the URL).")
    password: SecretStr | None = Field(None, description="Database password (instead of the URL).")
    name: str | None = Field(None, description="Database name (instead of the URL).")
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

    @classmethod
    def _build(cls, parts: dict[str, Any]) -> str:
        url = URL.create(
            make_url(cls.DEFAULT_URL).drivername,
            username=parts["user"],
            password=reveal(parts["password"]),
            host=parts["host"],
            port=int(parts["port"]) if parts["port"] is not None else None,
            database=parts["name"],
        )
        return url.render_as_string(hide_password=False)

    @classmethod
    def _split(cls, url: str) -> dict[str, Any]:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(
                "PULSE_DATABASE_URL is not a URL: postgresql+psycopg://USER:PASSWORD@HOST:PORT/NAME"
            ) from None
        return {
            "host": parsed.host,
            "port": parsed.port,
            "user": parsed.username,
            "password": parsed.password,
            "name": parsed.database,
        }

    @property
    def masked_url(self) -> str:
        """The URL with its password as `***`, for logs and messages."""
        return make_url(self.url).render_as_string(hide_password=True)


DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672//"


class BrokerSettings(_UrlOrParts):
    model_config = _config("PULSE_BROKER_")
    PARTS = ("host", "port", "user", "password", "vhost")
    DEFAULT_URL = DEFAULT_BROKER_URL

    url: str = Field(
        DEFAULT_BROKER_URL,
        repr=False,
        description="AMQP URL of RabbitMQ (it may carry the password); or give its parts.",
    )
    host: str | None = Field(None, description="RabbitMQ host (instead of the URL).")
    port: int | None = Field(None, description="RabbitMQ AMQP port (instead of the URL).")
    user: str | None = Field(None, description="RabbitMQ user (instead of the URL).")
    password: SecretStr | None = Field(None, description="RabbitMQ password (instead of the URL).")
    vhost: str | None = Field(None, description="RabbitMQ virtual host (instead of the URL; default `/`).")
    connect_timeout_seconds: float = Field(
        2.0, description="How long a publish waits to connect before the outbox takes over."
    )
    confirm_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="How long a publish waits for RabbitMQ's confirms (e.g. under a memory or disk "
        "alarm) before the outbox takes over.",
    )

    @classmethod
    def _build(cls, parts: dict[str, Any]) -> str:
        # kombu unquotes each part, so a `/`, `@` or `:` in a password or vhost survives (vhost `/` is `%2F`).
        user, password = parts["user"], reveal(parts["password"])
        userinfo = (
            quote(user, safe="") + (f":{quote(password, safe='')}" if password else "") + "@" if user else ""
        )
        return f"amqp://{userinfo}{parts['host']}:{parts['port']}/{quote(parts['vhost'], safe='')}"

    @classmethod
    def _split(cls, url: str) -> dict[str, Any]:
        parsed = url_to_parts(url)
        if parsed.scheme not in ("amqp", "amqps", "pyamqp") or not parsed.hostname:
            raise ValueError("PULSE_BROKER_URL is not an AMQP URL: amqp://USER:PASSWORD@HOST:PORT/VHOST")
        return {
            "host": parsed.hostname,
            "port": parsed.port,
            "user": parsed.username,
            "password": parsed.password,
            "vhost": parsed.path or "/",
        }


class FailoverSettings(BaseSettings):
    """A provider's settings with an optional secondary to fail over to (`PULSE_<PROVIDER>_SECONDARY__*`):
    configured once its `SECONDARY_SWITCH` field is set; its other fields default to the primary's, but
    for its send-rate limit, which is its own (another account's quota)."""

    SECONDARY_SWITCH: ClassVar[str]
    secondary: BaseModel
    rate_limit: OptionalSendRate

    def secondary_settings(self) -> Self | None:
        """The secondary as settings of its own, if one is configured."""
        given = {name: value for name, value in dict(self.secondary).items() if value is not None}
        if self.SECONDARY_SWITCH not in given:
            return None
        own = {"rate_limit": getattr(self.secondary, "rate_limit", None)}
        return self.model_copy(update={**given, **own, "secondary": type(self.secondary)()})


class SmtpSecondary(BaseModel):
    host: str | None = Field(
        None, description="Host of a secondary SMTP relay to fail over to; no failover when empty."
    )
    port: int | None = Field(None, description="Port of the secondary relay (default: the primary's).")
    username: str | None = Field(
        None, description="SMTP login user of the secondary relay (default: the primary's)."
    )
    password: SecretStr | None = Field(
        None, description="SMTP login password of the secondary relay (default: the primary's)."
    )
    starttls: bool | None = Field(
        None, description="STARTTLS towards the secondary relay (default: the primary's setting)."
    )
    use_tls: bool | None = Field(
        None, description="Implicit TLS towards the secondary relay (default: the primary's setting)."
    )
    rate_limit: OptionalSendRate = Field(
        None, description="Send-rate limit of the secondary relay (its own; unlimited when unset)."
    )


class SmtpSettings(FailoverSettings):
    model_config = _config("PULSE_SMTP_")
    SECONDARY_SWITCH = "host"

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
    deadline_seconds: float = Field(
        15.0,
        gt=0,
        description="Longest one mail's SMTP exchange may take, connecting (when needed) to the last "
        "reply; keep it well under the worker's claim lease, or a slow relay gets the mail sent twice.",
    )
    message_id_domain: str = Field(
        "pulse.localhost", description="Domain part of the stable Message-ID header."
    )
    rate_limit: OptionalSendRate = Field(
        None,
        description="Send-rate limit of the SMTP relay account, shared by every worker "
        "(`14/s`, `600/m`, `1000/h`, optionally `,burst=B`); unlimited when unset.",
    )
    secondary: SmtpSecondary = Field(
        default_factory=SmtpSecondary,
        description="A secondary relay (`PULSE_SMTP_SECONDARY__HOST`, `__PORT`, ...); unset fields take "
        "the primary's values.",
    )


SANDBOX_URL = "http://127.0.0.1:8025"
SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 (the sandbox's public stand-in, refused in production)
SANDBOX_ACCOUNT_SID = "AC" + "0" * 32
SANDBOX_PROJECT_ID = "pulse-sandbox"


class TwilioSecondary(BaseModel):
    base_url: str | None = Field(
        None, description="Base URL of a secondary account to fail over to; no failover when empty."
    )
    account_sid: str | None = Field(
        None, description="SID of the secondary account (default: the primary's)."
    )
    auth_token: SecretStr | None = Field(
        None, description="Auth token of the secondary account (default: the primary's)."
    )
    rate_limit: OptionalSendRate = Field(
        None, description="Send-rate limit of the secondary account (its own; unlimited when unset)."
    )


class TwilioSettings(FailoverSettings):
    model_config = _config("PULSE_TWILIO_")
    SECONDARY_SWITCH = "base_url"

    base_url: str = Field(SANDBOX_URL, description="Base URL of the Twilio API (default: the Pulse sandbox).")
    account_sid: str = Field(SANDBOX_ACCOUNT_SID, description="Twilio account SID (HTTP basic auth user).")
    auth_token: SecretStr = Field(SecretStr(SANDBOX_TOKEN), description="Twilio auth token.")
    from_number: str = Field(
        "+15005550006",
        validation_alias="PULSE_TWILIO_FROM",
        description="Sender number (E.164); WhatsApp sends from `whatsapp:<this number>`.",
    )
    timeout_seconds: float = Field(10.0, description="Connect and read timeout of one API request.")
    deadline_seconds: float = Field(
        15.0,
        gt=0,
        description="Longest a whole Twilio request may take, connecting to the last byte read; keep it "
        "well under the worker's claim lease, or a slow answer gets the message sent twice.",
    )
    rate_limit: OptionalSendRate = Field(
        None,
        description="Send-rate limit of the Twilio account (SMS and WhatsApp together), shared by every "
        "worker (`14/s`, `600/m`, `1000/h`, optionally `,burst=B`); unlimited when unset.",
    )
    secondary: TwilioSecondary = Field(
        default_factory=TwilioSecondary,
        description="A secondary account (`PULSE_TWILIO_SECONDARY__BASE_URL`, `__ACCOUNT_SID`, "
        "`__AUTH_TOKEN`); unset fields take the primary's values.",
    )


class FcmSecondary(BaseModel):
    base_url: str | None = Field(
        None, description="Base URL of a secondary FCM project to fail over to; no failover when empty."
    )
    project_id: str | None = Field(
        None, description="Firebase project id of the secondary (default: the primary's)."
    )
    access_token: SecretStr | None = Field(
        None, description="Static bearer token of the secondary (default: the primary's)."
    )
    credentials_file: str | None = Field(
        None, description="Service-account JSON file of the secondary project (default: the primary's)."
    )
    rate_limit: OptionalSendRate = Field(
        None, description="Send-rate limit of the secondary project (its own; unlimited when unset)."
    )


class FcmSettings(FailoverSettings):
    model_config = _config("PULSE_FCM_")
    SECONDARY_SWITCH = "base_url"

    base_url: str = Field(
        SANDBOX_URL, description="Base URL of the FCM HTTP v1 API (default: the Pulse sandbox)."
    )
    project_id: str = Field(SANDBOX_PROJECT_ID, description="Firebase project id (in the send URL).")
    access_token: SecretStr = Field(
        SecretStr(SANDBOX_TOKEN),
        description="Static OAuth2 bearer token (development); unused when `credentials_file` is set.",
    )
    credentials_file: str | None = Field(
        None,
        description="Google service-account JSON file to mint access tokens from "
        "(needs the optional `google-auth` package).",
    )
    timeout_seconds: float = Field(10.0, description="Connect and read timeout of one API request.")
    deadline_seconds: float = Field(
        15.0,
        gt=0,
        description="Longest a whole FCM request may take, connecting to the last byte read; keep it "
        "well under the worker's claim lease, or a slow answer gets the message sent twice.",
    )
    rate_limit: OptionalSendRate = Field(
        None,
        description="Send-rate limit of the Firebase project, shared by every worker "
        "(`14/s`, `600/m`, `1000/h`, optionally `,burst=B`); unlimited when unset.",
    )
    secondary: FcmSecondary = Field(
        default_factory=FcmSecondary,
        description="A secondary project (`PULSE_FCM_SECONDARY__BASE_URL`, `__PROJECT_ID`, "
        "`__ACCESS_TOKEN`, `__CREDENTIALS_FILE`); unset fields take the primary's values.",
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
    secret_grace_hours: float = Field(
        24.0,
        ge=0,
        description="After a rotation, deliveries carry a signature with the previous secret too for this "
        "long, so that receivers can switch secrets without refusing any.",
    )
    rate_limit_per_host: OptionalSendRate = Field(
        None,
        description="Send-rate limit towards each receiver host (and port), every tenant together, shared "
        "by every worker (`10/s`, optionally `,burst=B`); unlimited when unset.",
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
