"""What `pulse-admin` changes is in the tenants' audit logs, by `cli`, with no secret (private database)."""

import io
import json
import secrets
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.admin.cli import main
from pulse.db import transaction
from pulse.db.models import AuditEntry, Notification
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant


@pytest.fixture(autouse=True)
def _environment(private: Infrastructure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", private.database_url)
    monkeypatch.setenv("PULSE_BROKER_URL", private.broker_url)


@pytest.fixture
def tenant(factory: sessionmaker[Session]) -> tuple[str, uuid.UUID]:
    name = f"audit-cli-{secrets.token_hex(4)}"
    with transaction(factory) as session:
        return name, create_tenant(session, name=name).id


def _log(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> list[AuditEntry]:
    with factory() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.tenant_id == tenant_id).order_by(AuditEntry.created_at)
            )
        )


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_configure_tenant_logs_the_settings_it_changed(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: tuple[str, uuid.UUID]
) -> None:
    name, tenant_id = tenant
    _run(capsys, "configure-tenant", name, "--timezone", "Europe/Paris", "--rate-limit", "off")

    [entry] = _log(factory, tenant_id)
    assert (entry.actor, entry.action, entry.object_type, entry.object_id) == (
        "cli",
        "tenant.configure",
        "tenant",
        str(tenant_id),
    )
    assert entry.changes == {
        "before": {"timezone": "UTC", "rate_limit": None},
        "after": {"timezone": "Europe/Paris", "rate_limit": 0},
    }
    assert entry.request_id is None


def test_issuing_revoking_and_rotating_are_logged_without_the_secrets(
    capsys: pytest.CaptureFixture[str],
    factory: sessionmaker[Session],
    tenant: tuple[str, uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, tenant_id = tenant
    key = _run(capsys, "create-api-key", "--tenant", name, "--scopes", "send", "--name", "cron").splitlines()[
        -1
    ]
    _run(capsys, "revoke-api-key", "--tenant", name, key[:10])
    secret = _run(capsys, "webhook-secret", name, "--rotate").splitlines()[-1]
    _run(capsys, "webhook-secret", name)  # Reading it changes nothing.

    entries = _log(factory, tenant_id)

    assert [(entry.actor, entry.action) for entry in entries] == [
        ("cli", "api_key.create"),
        ("cli", "api_key.revoke"),
        ("cli", "webhook_secret.rotate"),
    ]
    created: Any = entries[0].changes
    assert (created["after"]["name"], created["after"]["prefix"]) == ("cron", key[:10])
    assert entries[0].object_id == entries[1].object_id
    text = json.dumps([entry.changes for entry in entries])
    assert key not in text and key[10:] not in text and secret not in text
    monkeypatch.setattr("sys.stdin", io.StringIO(key))
    assert main(["check-api-key"]) == 2  # Revoked.


def _failed(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> uuid.UUID:
    request = NotificationRequest.model_validate(
        {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "s", "body": "b"}}
    )
    with transaction(factory) as session:
        notification_id = accept_notification(session, tenant_id=tenant_id, request=request).notification.id
        session.execute(
            update(Notification).where(Notification.id == notification_id).values(status="failed")
        )
    return notification_id


def test_replays_are_logged_once_per_call_and_tenant_with_their_count(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: tuple[str, uuid.UUID]
) -> None:
    name, tenant_id = tenant
    with transaction(factory) as session:
        other_id = create_tenant(session, name=f"{name}-other").id
    single = _failed(factory, tenant_id)
    _run(capsys, "dlq", "replay", "--id", str(single))
    for owner in (tenant_id, tenant_id, other_id):
        _failed(factory, owner)

    _run(capsys, "dlq", "replay", "--channel", "email")  # Every tenant's.

    logged = [(entry.action, entry.object_id, entry.changes) for entry in _log(factory, tenant_id)]
    assert logged[0] == ("dead_letter.replay", str(single), None)
    assert logged[1][:2] == ("dead_letter.replay_bulk", "email")
    assert logged[1][2] == {"after": {"channel": "email", "since": None, "until": None, "replayed": 2}}
    [other] = _log(factory, other_id)
    assert (other.action, other.changes) == (
        "dead_letter.replay_bulk",
        {"after": {"channel": "email", "since": None, "until": None, "replayed": 1}},
    )
