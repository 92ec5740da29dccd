"""Recording a change in the transaction that makes it, reading the log, and forgetting old entries."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from pulse.audit.changes import Snapshot, diff
from pulse.db.models import AuditEntry
from pulse.observability.logging import request_id
from pulse.pagination import newest_first_page

OPERATOR = "cli"


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_AUDIT_", env_file=".env", extra="ignore")

    retention_days: float = Field(
        365, gt=0, description="Audit log entries older than this are deleted by the scheduler."
    )


class Actor(Protocol):
    """Who makes a change: an API key of a tenant (an authenticated `Principal`), or the operator."""

    @property
    def tenant_id(self) -> uuid.UUID: ...

    @property
    def key_id(self) -> uuid.UUID | None: ...


@dataclass(frozen=True)
class Operator:
    """`pulse-admin`, run by whoever holds the database credentials: logged as `cli`."""

    tenant_id: uuid.UUID
    key_id: None = None


def record_change(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: object,
    *,
    before: Snapshot = None,
    after: Snapshot = None,
) -> None:
    """Log `action` (e.g. `template.update`) on an object in `session`'s transaction: it is kept only
    if the change commits. Time is the database's; the request id is the current request's, if any."""
    session.execute(
        insert(AuditEntry).values(
            id=uuid.uuid4(),
            tenant_id=actor.tenant_id,
            actor=OPERATOR if actor.key_id is None else str(actor.key_id),
            action=action,
            object_type=object_type,
            object_id=str(object_id)[:255],
            request_id=request_id.get(),
            changes=diff(before, after),
        )
    )


@dataclass(frozen=True)
class AuditFilters:
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None


def list_entries(
    session: Session, *, tenant_id: uuid.UUID, filters: AuditFilters, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """The tenant's entries newest first, keyset-paginated."""
    query = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    for column, value in (
        (AuditEntry.action, filters.action),
        (AuditEntry.object_type, filters.object_type),
        (AuditEntry.object_id, filters.object_id),
    ):
        if value is not None:
            query = query.where(column == value)
    return newest_first_page(
        session, query, created_at=AuditEntry.created_at, id=AuditEntry.id, limit=limit, cursor=cursor
    )


def delete_old_entries(session: Session, *, keep_for: timedelta, batch_size: int) -> int:
    """One bounded batch of the entries older than `keep_for`; returns how many went."""
    old = (
        select(AuditEntry.id)
        .where(AuditEntry.created_at < datetime.now(UTC) - keep_for)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    deleted = session.execute(
        delete(AuditEntry).where(AuditEntry.id.in_(old.scalar_subquery())).returning(AuditEntry.id)
    ).all()
    return len(deleted)
