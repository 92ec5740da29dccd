"""Reading a service's settings at start: an invalid setting, or in production a development default
it would use, stops the service with one paragraph naming each setting and what to set instead.

A service checks only the settings blocks it is composed of (its settings class's fields, nested),
so the push worker is not refused for an SMTP default it never uses.
"""

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from pulse.settings import (
    DEVELOPMENT_JWT_SECRET,
    SANDBOX_ACCOUNT_SID,
    SANDBOX_PROJECT_ID,
    SANDBOX_TOKEN,
    SANDBOX_URL,
    BrokerSettings,
    DatabaseSettings,
    Environment,
    EnvironmentSettings,
    FailoverSettings,
    FcmSettings,
    JwtSettings,
    SmtpSettings,
    TwilioSettings,
    reveal,
)


@dataclass(frozen=True)
class SandboxDefault:
    """Production refuses a `block` whose `fields` all still have these development values."""

    block: type[BaseSettings]
    fields: dict[str, object]
    instead: str


SANDBOX_DEFAULTS = [
    SandboxDefault(
        DatabaseSettings,
        {"user": "postgres", "password": None},
        "a database user of your own, with a password (PULSE_DATABASE_URL, or PULSE_DATABASE_USER and "
        "PULSE_DATABASE_PASSWORD)",
    ),
    SandboxDefault(
        BrokerSettings,
        {"user": "guest", "password": "guest"},
        "a RabbitMQ user of your own (PULSE_BROKER_URL, or PULSE_BROKER_USER and PULSE_BROKER_PASSWORD)",
    ),
    SandboxDefault(SmtpSettings, {"host": "127.0.0.1", "port": 1025}, "your SMTP relay's host and port"),
    SandboxDefault(TwilioSettings, {"base_url": SANDBOX_URL}, "Twilio's https://api.twilio.com"),
    SandboxDefault(TwilioSettings, {"account_sid": SANDBOX_ACCOUNT_SID}, "your Twilio account SID"),
    SandboxDefault(TwilioSettings, {"auth_token": SANDBOX_TOKEN}, "your Twilio auth token"),
    SandboxDefault(FcmSettings, {"base_url": SANDBOX_URL}, "FCM's https://fcm.googleapis.com"),
    SandboxDefault(FcmSettings, {"project_id": SANDBOX_PROJECT_ID}, "your Firebase project id"),
    SandboxDefault(
        FcmSettings,
        {"access_token": SANDBOX_TOKEN, "credentials_file": None},
        "PULSE_FCM_CREDENTIALS_FILE to your service-account JSON file",
    ),
    SandboxDefault(
        JwtSettings, {"secret": DEVELOPMENT_JWT_SECRET}, "a random secret of 32 characters or more"
    ),
]


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], service: str) -> S:
    """`cls()` read from the environment, or the process exits with a message (never a traceback)."""
    try:
        settings = cls()
        environment = EnvironmentSettings().environment
    except ValidationError as error:
        # Without the input values: they may be passwords.
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) or error.title}: "
            + problem["msg"].removeprefix("Value error, ")
            for problem in error.errors(include_input=False, include_url=False)
        )
        sys.exit(f"{service}: invalid settings: {problems}.")
    if environment is Environment.PRODUCTION and (kept := sandbox_defaults_kept(settings)):
        sys.exit(
            f"{service}: refusing to start in production (PULSE_ENVIRONMENT=production) with development "
            "defaults: " + "; ".join(kept) + "."
        )
    return settings


def sandbox_defaults_kept(settings: BaseSettings) -> list[str]:
    """What `settings` keeps of SANDBOX_DEFAULTS, each as "VARIABLES are still the development
    default: set <what>"."""
    kept = []
    for block, prefix, given in _blocks(settings):
        for rule in SANDBOX_DEFAULTS:
            if not isinstance(block, rule.block) or not rule.fields.keys() & given:
                continue
            if all(reveal(getattr(block, name)) == value for name, value in rule.fields.items()):
                names = " and ".join(_variable(block, prefix, name) for name in rule.fields)
                verb = "are" if len(rule.fields) > 1 else "is"
                kept.append(f"{names} {verb} still the development default: set {rule.instead}")
    return kept


def _blocks(settings: BaseModel) -> Iterator[tuple[BaseSettings, str, set[str]]]:
    """Every settings block in `settings` (itself included), with its variables' prefix and the fields
    that count; a provider's configured secondary counts with the fields it sets (the others are the
    primary's, checked there)."""
    if isinstance(settings, BaseSettings):
        prefix = str(settings.model_config.get("env_prefix", ""))
        yield settings, prefix, set(type(settings).model_fields)
        if (
            isinstance(settings, FailoverSettings)
            and (secondary := settings.secondary_settings()) is not None
        ):
            yield secondary, f"{prefix}SECONDARY__", settings.secondary.model_fields_set
    for name in type(settings).model_fields:
        if isinstance(value := getattr(settings, name), BaseSettings):
            yield from _blocks(value)


def _variable(block: BaseSettings, prefix: str, name: str) -> str:
    alias = type(block).model_fields[name].validation_alias
    return alias if isinstance(alias, str) and "SECONDARY__" not in prefix else (prefix + name).upper()
