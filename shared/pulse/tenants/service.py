"""Creating tenants, issuing API keys and resolving a presented key to its tenant and scopes."""

import hashlib
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import ColumnElement, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.models import ApiKey, Tenant
from pulse.errors import Conflict, InvalidInput, NotFound
from pulse.pagination import newest_first_page
from pulse.rate_limits.service import MAX_WINDOW_SECONDS
from pulse.timing.clock import time_zone
from pulse.timing.quiet_hours import QuietHours
from pulse.vocabulary import Priority

API_KEY_PREFIX = "pk_"
# Active keys per tenant: enough for one per service and environment, and a bound on what a key can
# create.
MAX_ACTIVE_KEYS = 100
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
    # The key itself: the audit log names it, and a cached principal knows when to stop working.
    key_id: uuid.UUID | None = None
    expires_at: datetime | None = None

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


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
    tenant = tenant_named(session, name)
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


def tenant_named(session: Session, name: str) -> Tenant:
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None:
        raise NotFound(f"tenant {name!r} does not exist")
    return tenant


def create_api_key(
    session: Session,
    *,
    tenant_name: str,
    scopes: list[Scope],
    name: str | None = None,
    expires_at: datetime | None = None,
) -> str:
    """Issue a new key to the tenant of that name; returns the key (see `issue_api_key`)."""
    key, _ = issue_api_key(
        session,
        tenant_id=tenant_named(session, tenant_name).id,
        scopes=scopes,
        name=name,
        expires_at=expires_at,
    )
    return key


def issue_api_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    scopes: Sequence[Scope],
    name: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, ApiKey]:
    """Issue a new key; only its hash is stored, so the returned key is the only copy. Conflict once
    the tenant has MAX_ACTIVE_KEYS active keys."""
    if not scopes:
        raise InvalidInput("an API key needs at least one scope", location=("body", "scopes"))
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidInput("expires_at must be in the future", location=("body", "expires_at"))
    # Locks the tenant's row: concurrent issues count one after the other.
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    active = session.scalar(select(func.count()).where(ApiKey.tenant_id == tenant_id, _active()))
    if (active or 0) >= MAX_ACTIVE_KEYS:
        raise Conflict(f"a tenant has at most {MAX_ACTIVE_KEYS} active API keys; revoke one first")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = session.scalars(
        insert(ApiKey)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            key_hash=hash_api_key(key),
            prefix=key[:10],
            scopes=sorted(str(scope) for scope in set(scopes)),
            name=name,
            expires_at=expires_at,
        )
        .returning(ApiKey)
    ).one()
    return key, row


def list_api_keys(session: Session, *, tenant_name: str) -> Sequence[ApiKey]:
    """The tenant's keys, revoked ones too, oldest first."""
    tenant = tenant_named(session, tenant_name)
    return session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant.id).order_by(ApiKey.created_at, ApiKey.id)
    ).all()


def api_key_page(
    session: Session, *, tenant_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    """The tenant's keys, revoked and expired ones too, newest first, keyset-paginated."""
    return newest_first_page(
        session,
        select(ApiKey).where(ApiKey.tenant_id == tenant_id),
        created_at=ApiKey.created_at,
        id=ApiKey.id,
        limit=limit,
        cursor=cursor,
    )


def revoke_api_key(session: Session, *, tenant_name: str, prefix: str) -> ApiKey:
    """Revoke the tenant's active key with this prefix (its first 10 characters); NotFound if it has
    none, InvalidInput (nothing revoked, the caller rolling back) if several share it. Gateways refuse
    it once their auth cache (PULSE_AUTH_CACHE_SECONDS) expires."""
    tenant = tenant_named(session, tenant_name)
    revoked = _revoke(session, tenant.id, ApiKey.prefix == prefix)
    if not revoked:
        raise NotFound(f"tenant {tenant_name!r} has no active API key with prefix {prefix!r}")
    if len(revoked) > 1:
        raise InvalidInput(f"several active API keys have prefix {prefix!r}: none was revoked")
    return revoked[0]


def revoke_api_key_by_id(session: Session, *, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """Revoke the tenant's key with this id; NotFound if it has no such key still active."""
    revoked = _revoke(session, tenant_id, ApiKey.id == key_id)
    if not revoked:
        raise NotFound(f"no active API key {key_id}")
    return revoked[0]


def _revoke(session: Session, tenant_id: uuid.UUID, which: ColumnElement[bool]) -> Sequence[ApiKey]:
    return session.scalars(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant_id, which, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey)
    ).all()


def _active() -> ColumnElement[bool]:
    return ApiKey.revoked_at.is_(None) & or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now())


def find_principal(session: Session, *, key: str, mark_used: bool = False) -> Principal | None:
    """The tenant and scopes of an unrevoked key (expired or not: see `Principal.expired`). With
    `mark_used`, in the same statement, its `last_used_at` becomes now if it was over a minute ago
    (the caller commits)."""
    key_hash = hash_api_key(key)
    query = (
        select(
            ApiKey.id,
            ApiKey.tenant_id,
            ApiKey.scopes,
            ApiKey.expires_at,
            Tenant.name,
            Tenant.timezone,
            Tenant.quiet_hours,
            Tenant.default_priority,
            Tenant.rate_limit,
            Tenant.rate_limit_window_seconds,
            Tenant.sends_per_minute,
        )
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    if mark_used:
        # A data-modifying WITH runs whether or not the query reads it: no extra round trip.
        query = query.add_cte(
            update(ApiKey)
            .where(
                ApiKey.key_hash == key_hash,
                _active(),
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at < func.now() - text("interval '1 minute'"),
                ),
            )
            .values(last_used_at=func.now())
            .returning(ApiKey.id)
            .cte("marked_used")
        )
    row = session.execute(query).one_or_none()
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
        key_id=row.id,
        expires_at=row.expires_at,
    )
