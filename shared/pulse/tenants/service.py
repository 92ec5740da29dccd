"""Creating tenants, issuing API keys and resolving a presented key to its tenant and scopes."""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.models import ApiKey, Tenant
from pulse.errors import InvalidInput, NotFound
from pulse.scheduling.quiet_hours import QuietHours

API_KEY_PREFIX = "pk_"
DEFAULT_QUIET_HOURS = "default"


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
    session: Session, *, name: str, timezone: str | None = None, quiet_hours: str | None = None
) -> Tenant:
    """Set a tenant's default time zone and quiet hours (`default` = the deployment's PULSE_QUIET_HOURS)."""
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None:
        raise NotFound(f"tenant {name!r} does not exist")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise InvalidInput(f"unknown time zone {timezone!r}") from error
        tenant.timezone = timezone
    if quiet_hours is not None:
        if quiet_hours == DEFAULT_QUIET_HOURS:
            tenant.quiet_hours = None
        else:
            try:
                QuietHours.parse(quiet_hours)
            except ValueError as error:
                raise InvalidInput(str(error)) from error
            tenant.quiet_hours = quiet_hours
    return tenant


def create_api_key(session: Session, *, tenant_name: str, scopes: list[Scope]) -> str:
    """Issue a new key; only its hash is stored, so the returned value is the only copy."""
    tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name)).one_or_none()
    if tenant is None:
        raise NotFound(f"tenant {tenant_name!r} does not exist")
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


def find_principal(session: Session, *, key: str) -> Principal | None:
    row = session.execute(
        select(ApiKey.tenant_id, Tenant.name, ApiKey.scopes, Tenant.timezone, Tenant.quiet_hours)
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
    )
