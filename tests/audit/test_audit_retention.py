"""Audit entries older than PULSE_AUDIT_RETENTION_DAYS are deleted by the scheduler's retention job,
in bounded batches, and younger ones stay (private database)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.audit.service import Operator, delete_old_entries, record_change
from pulse.db import transaction
from pulse.db.models import AuditEntry
from pulse.messaging.celery_app import make_celery
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.tenants.service import create_tenant
from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings


def test_entries_older_than_the_retention_go_in_batches_and_younger_ones_stay(
    factory: sessionmaker[Session],
) -> None:
    tenant_id = _log(factory, "audit-retention", "old-1", "old-2", "old-3", "recent", days_ago=400)

    deleted = []
    for _ in range(3):
        with transaction(factory) as session:
            deleted.append(delete_old_entries(session, keep_for=timedelta(days=365), batch_size=2))

    assert deleted == [2, 1, 0]
    assert _kept(factory, tenant_id) == ["recent"]


def test_the_scheduler_runs_the_retention_with_pulse_audit_retention_days(
    factory: sessionmaker[Session], private: Infrastructure, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = _log(factory, "audit-scheduler", "old", "recent", days_ago=2)
    monkeypatch.setenv("PULSE_AUDIT_RETENTION_DAYS", "1")
    settings = SchedulerSettings(
        database=DatabaseSettings(url=private.database_url), broker=BrokerSettings(url=private.broker_url)
    )
    celery = make_celery("pulse-tests-scheduler", settings.broker)
    try:
        Scheduler(settings, factory, celery).run_once()
    finally:
        celery.close()

    assert _kept(factory, tenant_id) == ["recent"]


def _log(factory: sessionmaker[Session], tenant: str, *names: str, days_ago: int) -> uuid.UUID:
    """A tenant with an entry for each name, those starting with `old` dated `days_ago`; its id."""
    with transaction(factory) as session:
        operator = Operator(create_tenant(session, name=tenant).id)
        for name in names:
            record_change(session, operator, "template.create", "template", name)
        session.execute(
            update(AuditEntry)
            .where(AuditEntry.tenant_id == operator.tenant_id, AuditEntry.object_id.like("old%"))
            .values(created_at=datetime.now(UTC) - timedelta(days=days_ago))
        )
    return operator.tenant_id


def _kept(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> list[str]:
    with factory() as session:
        return list(session.scalars(select(AuditEntry.object_id).where(AuditEntry.tenant_id == tenant_id)))


def test_the_retention_is_read_from_pulse_audit_retention_days(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SchedulerSettings().audit.retention_days == 365
    monkeypatch.setenv("PULSE_AUDIT_RETENTION_DAYS", "30")
    assert SchedulerSettings().audit.retention_days == 30
