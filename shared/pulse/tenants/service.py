"""Creating tenants, issuing API keys and resolving a presented key to its tenant and scopes."""

import hashlib
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.models import ApiKey, Tenant
from pulse.errors import InvalidInput, NotFound
from pulse.rate_limits.service import MAX_WINDOW_SECONDS
from pulse.scheduling.clock import time_zone
from pulse.scheduling.quiet_hours import QuietHours
from pulse.vocabulary import Priority

API_KEY_PREFIX = "pk_"
DEFAULT_SETTING = "default"
_Setting = TypeVar("_Setting")


class Scope(StrEnum):
    SEND = "send"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a key belongs to and what the key may do."""

    tenant_id: uuid.UUID
    tenant_name: str
    scopes: frozenset[Scope]
    # The tenant's defaults for its recipients (quiet hours None: the deployment's default).
    timezone: str = "UTC"
    quiet_hours: str | None = None
    default_priority: Priority | None = None
    # Sends per (user or recipient, channel) per window; None: the deployment's default.
    rate_limit: int | None = None
    rate_limit_window_seconds: int | None = None
    # Its quota of sends per minute, every channel together; None: the deployment's default.
    sends_per_minute: int | None = None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str) -> list[Scope]:
    try:
        return sorted({Scope(part.strip()) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise InvalidInput(f"unknown scope in {text!r}; choose from {', '.join(Scope)}") from error


def create_tenant(session: Session, *, name: str) -> Tenant:
    """Create the tenant, or return the existing one of that name."""
    session.execute(pg_insert(Tenant).values(id=uuid.uuid4(), name=name).on_conflict_do_nothing())
    return session.scalars(select(Tenant).where(Tenant.name == name)).one()


def configure_tenant(
    session: Session,
    *,
    name: str,
    timezone: str | None = None,
    quiet_hours: str | None = None,
    default_priority: str | None = None,
    rate_limit: str | None = None,
    rate_limit_window_seconds: int | None = None,
    sends_per_minute: str | None = None,
) -> Tenant:
    """Set a tenant's defaults; for quiet hours, priority, rate limit and quota, `default` goes back
    to the deployment's (PULSE_QUIET_HOURS, `normal`, PULSE_RATE_LIMIT, PULSE_TENANT_SENDS_PER_MINUTE);
    a rate limit or quota of `off` is none."""
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None:
        raise NotFound(f"tenant {name!r} does not exist")
    if timezone is not None:
        try:
            time_zone(timezone)
        except ValueError as error:
            raise InvalidInput(str(error)) from error
        tenant.timezone = timezone
    if quiet_hours is not None:
        if quiet_hours == DEFAULT_SETTING:
            tenant.quiet_hours = None
        else:
            try:
                QuietHours.parse(quiet_hours)
            except ValueError as error:
                raise InvalidInput(str(error)) from error
            tenant.quiet_hours = quiet_hours
    if default_priority is not None:
        tenant.default_priority = _default_or(default_priority, _priority)
    if rate_limit is not None:
        tenant.rate_limit = _default_or(rate_limit, _send_count)
    if rate_limit_window_seconds is not None:
        if not 1 <= rate_limit_window_seconds <= MAX_WINDOW_SECONDS:
            raise InvalidInput(f"the rate limit window is 1 to {MAX_WINDOW_SECONDS} seconds")
        tenant.rate_limit_window_seconds = rate_limit_window_seconds
    if sends_per_minute is not None:
        tenant.sends_per_minute = _default_or(sends_per_minute, _send_count)
    return tenant


def _default_or(value: str, parse: Callable[[str], _Setting]) -> _Setting | None:
    return None if value == DEFAULT_SETTING else parse(value)


def _priority(value: str) -> str:
    try:
        return Priority(value)
    except ValueError as error:
        raise InvalidInput(f"unknown priority {value!r}; choose from {', '.join(Priority)}") from error


def _send_count(value: str) -> int:
    """A rate limit or quota: a positive number of sends, or `off` (0)."""
    if value == "off":
        return 0
    if not value.isdigit() or int(value) < 1:
        raise InvalidInput(f"a limit is a positive number of sends, 'off' or 'default', not {value!r}")
    return int(value)


def _tenant_named(session: Session, name: str) -> Tenant:
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None:
        raise NotFound(f"tenant {name!r} does not exist")
    return tenant


def create_api_key(session: Session, *, tenant_name: str, scopes: list[Scope]) -> str:
    """Issue a new key; only its hash is stored, so the returned value is the only copy."""
    tenant = _tenant_named(session, tenant_name)
    if not scopes:
        raise InvalidInput("an API key needs at least one scope")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    session.execute(
        insert(ApiKey).values(
            id=uuid.uuid4(),
            tenant_id=tenant.id,
            key_hash=hash_api_key(key),
            prefix=key[:10],
            scopes=[str(scope) for scope in scopes],
        )
    )
    return key


def list_api_keys(session: Session, *, tenant_name: str) -> Sequence[ApiKey]:
    """The tenant's keys, revoked ones too, oldest first."""
    tenant = _tenant_named(session, tenant_name)
    return session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant.id).order_by(ApiKey.created_at, ApiKey.id)
    ).all()


def revoke_api_key(session: Session, *, tenant_name: str, prefix: str) -> ApiKey:
    """Revoke the tenant's active key with this prefix (its first 10 characters); NotFound if it has
    none, InvalidInput (nothing revoked, the caller rolling back) if several share it. Gateways refuse
    it once their auth cache (PULSE_AUTH_CACHE_SECONDS) expires."""
    tenant = _tenant_named(session, tenant_name)
    revoked = session.scalars(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant.id, ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey)
    ).all()
    if not revoked:
        raise NotFound(f"tenant {tenant_name!r} has no active API key with prefix {prefix!r}")
    if len(revoked) > 1:
        raise InvalidInput(f"several active API keys have prefix {prefix!r}: none was revoked")
    return revoked[0]


def find_principal(session: Session, *, key: str) -> Principal | None:
    row = session.execute(
        select(
            ApiKey.tenant_id,
            Tenant.name,
            ApiKey.scopes,
            Tenant.timezone,
            Tenant.quiet_hours,
            Tenant.default_priority,
            Tenant.rate_limit,
            Tenant.rate_limit_window_seconds,
            Tenant.sends_per_minute,
        )
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    return Principal(
        tenant_id=row.tenant_id,
        tenant_name=row.name,
        scopes=frozenset(map(Scope, row.scopes)),
        timezone=row.timezone,
        quiet_hours=row.quiet_hours,
        default_priority=Priority(row.default_priority) if row.default_priority else None,
        rate_limit=row.rate_limit,
        rate_limit_window_seconds=row.rate_limit_window_seconds,
        sends_per_minute=row.sends_per_minute,
    )
