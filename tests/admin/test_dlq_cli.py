"""`pulse-admin dlq list|replay` run in-process against a private database and vhost (no scheduler or
worker of the `stack` publishes or delivers what the commands re-queue)."""

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.admin.cli import main
from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant


@pytest.fixture(autouse=True)
def _environment(private: Infrastructure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", private.database_url)
    monkeypatch.setenv("PULSE_BROKER_URL", private.broker_url)


@pytest.fixture
def tenant(factory: sessionmaker[Session]) -> str:
    name = f"dlq-cli-{secrets.token_hex(4)}"
    with transaction(factory) as session:
        create_tenant(session, name=name)
    return name


def _notification(
    factory: sessionmaker[Session],
    tenant: str,
    *,
    status: str = "failed",
    failed_ago: timedelta = timedelta(minutes=1),
    error: str = "550 mailbox unavailable",
    attempts: int = 2,
) -> uuid.UUID:
    """A notification put straight into `status`, with no publish owed (nothing would deliver it here)."""
    request = NotificationRequest.model_validate(
        {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "s", "body": "b"}}
    )
    with transaction(factory) as session:
        tenant_id = create_tenant(session, name=tenant).id
        notification_id = accept_notification(session, tenant_id=tenant_id, request=request).notification.id
        session.execute(delete(OutboxMessage).where(OutboxMessage.notification_id == notification_id))
        failed = status == "failed"
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(
                status=status,
                attempt_count=attempts,
                failed_at=datetime.now(UTC) - failed_ago if failed else None,
                last_error=error if failed else None,
            )
        )
    return notification_id


def _row(factory: sessionmaker[Session], notification_id: uuid.UUID) -> Notification:
    with factory() as session:
        return session.get_one(Notification, notification_id)


def _owed(factory: sessionmaker[Session], notification_id: uuid.UUID) -> int:
    with factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.notification_id == notification_id)
            )
            or 0
        )


def _lines_with(output: str, notification_id: uuid.UUID) -> list[str]:
    return [line for line in output.splitlines() if str(notification_id) in line]


def test_dlq_list_prints_a_tenant_s_failed_notifications_with_their_last_error(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: str
) -> None:
    older = _notification(factory, tenant, failed_ago=timedelta(hours=2), error="550 no such user")
    newer = _notification(factory, tenant, failed_ago=timedelta(minutes=1), error="421 try again later")
    delivered = _notification(factory, tenant, status="delivered")
    someone_else_s = _notification(factory, f"{tenant}-other")

    assert main(["dlq", "list", "--tenant", tenant]) == 0
    output = capsys.readouterr().out

    [newer_line] = _lines_with(output, newer)
    [older_line] = _lines_with(output, older)
    assert "421 try again later" in newer_line
    assert "550 no such user" in older_line
    assert "email" in older_line
    assert output.index(str(newer)) < output.index(str(older))  # Most recent failure first.
    assert _lines_with(output, delivered) == []
    assert _lines_with(output, someone_else_s) == []


def test_dlq_list_filters_by_channel_and_limits(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: str
) -> None:
    ids = [_notification(factory, tenant, failed_ago=timedelta(minutes=n)) for n in (1, 2)]

    assert main(["dlq", "list", "--tenant", tenant, "--channel", "sms"]) == 0
    assert not any(_lines_with(capsys.readouterr().out, i) for i in ids)
    assert main(["dlq", "list", "--tenant", tenant, "--channel", "email", "--limit", "1"]) == 0
    output = capsys.readouterr().out
    assert len(_lines_with(output, ids[0])) == 1
    assert _lines_with(output, ids[1]) == []


def test_dlq_list_of_an_unknown_tenant_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list", "--tenant", "nobody-here"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dlq_replay_of_one_requeues_it_with_a_fresh_budget(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: str
) -> None:
    notification_id = _notification(factory, tenant, attempts=3)
    untouched = _notification(factory, tenant, attempts=3)

    assert main(["dlq", "replay", "--tenant", tenant, "--id", str(notification_id)]) == 0
    assert str(notification_id) in capsys.readouterr().out

    row = _row(factory, notification_id)
    assert row.status == "queued"
    assert row.failed_at is None
    assert row.attempt_count == 3
    assert row.attempts_before_replay == row.attempt_count
    assert row.replay_count == 1
    assert _owed(factory, notification_id) == 1
    assert _row(factory, untouched).status == "failed"
    assert _owed(factory, untouched) == 0


def test_dlq_replay_of_a_notification_that_is_not_failed_exits_2(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: str
) -> None:
    notification_id = _notification(factory, tenant)
    assert main(["dlq", "replay", "--id", str(notification_id)]) == 0
    capsys.readouterr()

    # Now queued: a second replay is refused and changes nothing.
    assert main(["dlq", "replay", "--id", str(notification_id)]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert str(notification_id) in output.err
    assert "queued" in output.err
    assert _row(factory, notification_id).replay_count == 1
    assert _owed(factory, notification_id) == 1


def test_dlq_replay_of_an_unknown_or_other_tenant_s_notification_exits_2(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: str
) -> None:
    someone_else_s = _notification(factory, f"{tenant}-other")

    assert main(["dlq", "replay", "--id", str(uuid.uuid4())]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["dlq", "replay", "--tenant", tenant, "--id", str(someone_else_s)]) == 2
    assert "not found" in capsys.readouterr().err
    assert _row(factory, someone_else_s).status == "failed"


def test_dlq_replay_by_channel_and_time_replays_only_the_matching_ones(
    capsys: pytest.CaptureFixture[str], factory: sessionmaker[Session], tenant: str
) -> None:
    recent = [_notification(factory, tenant, failed_ago=timedelta(minutes=n)) for n in (1, 2)]
    old = _notification(factory, tenant, failed_ago=timedelta(hours=3))
    sms = _notification(factory, tenant)
    with transaction(factory) as session:
        session.execute(update(Notification).where(Notification.id == sms).values(channel="sms"))
    someone_else_s = _notification(factory, f"{tenant}-other")
    # Naive means UTC.
    since = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()

    assert main(["dlq", "replay", "--channel", "email", "--tenant", tenant, "--since", since]) == 0
    assert capsys.readouterr().out.strip() == "replayed 2"

    assert [_row(factory, i).status for i in recent] == ["queued", "queued"]
    assert [_owed(factory, i) for i in recent] == [1, 1]
    assert {_row(factory, i).status for i in (old, sms, someone_else_s)} == {"failed"}
    assert [_owed(factory, i) for i in (old, sms, someone_else_s)] == [0, 0, 0]

    # --until narrows from the other side.
    until = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    assert main(["dlq", "replay", "--channel", "email", "--tenant", tenant, "--until", until]) == 0
    assert capsys.readouterr().out.strip() == "replayed 1"
    assert _row(factory, old).status == "queued"


def test_dlq_replay_without_id_or_channel_exits_2(capsys: pytest.CaptureFixture[str], tenant: str) -> None:
    assert main(["dlq", "replay", "--tenant", tenant]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert "--id" in output.err and "--channel" in output.err


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["dlq", "replay", "--channel", "email", "--since", "yesterday"], "--since"),
        (["dlq", "replay", "--id", "not-a-uuid"], "--id"),
        (["dlq", "list", "--limit", "-1"], "--limit"),
        (["dlq", "list", "--limit", "0"], "--limit"),
    ],
)
def test_a_malformed_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err
