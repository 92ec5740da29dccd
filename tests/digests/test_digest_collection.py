"""Collecting sends into digests and closing them, in a private database (no scheduler of the
session's stack takes part)."""

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import make_session_factory, transaction
from pulse.db.models import Digest, DigestEvent, Notification, OutboxMessage
from pulse.digests.service import close_due_digests, collect
from pulse.errors import InvalidInput
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.notifications.release import release_due_notifications
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import cancel_notification
from pulse.templates.schemas import TemplateIn
from pulse.templates.service import create_template, delete_template
from pulse.tenants.service import create_tenant
from pulse.timing.policy import TenantPolicy
from pulse.vocabulary import Status
from tests.conftest import wait_until

WINDOW = 600
RULES = AcceptanceSettings(
    enabled_channels=["email"],
    quiet_hours="off",
    webhook_allowlist="",
    rate_limit=0,
    rate_limit_window_seconds=60,
    tenant_sends_per_minute=0,
)
NO_QUIET_HOURS = TenantPolicy()
COMMENTS = TemplateIn(
    name="comments",
    channel="email",
    subject="{{ count }} new comments",
    body="{% for e in events %}{{ loop.index }}. {{ e.author }}: {{ e.text }}\n{% endfor %}",
    variables=["events", "count"],
)


@pytest.fixture(autouse=True)
def _empty(factory: sessionmaker[Session]) -> None:
    """Every test counts the digests and notifications it finds."""
    with transaction(factory) as session:
        session.execute(delete(Notification))


@pytest.fixture
def tenant_id(factory: sessionmaker[Session]) -> uuid.UUID:
    with transaction(factory) as session:
        tenant = create_tenant(session, name=f"digests-{uuid.uuid4().hex[:8]}")
        create_template(session, tenant_id=tenant.id, request=COMMENTS)
        return tenant.id


def _send(
    text: str, *, key: str = "comments", max_events: int | None = None, **fields: Any
) -> NotificationRequest:
    return NotificationRequest.model_validate(
        {
            "channel": "email",
            "recipient": "ada@example.com",
            "user_id": "u-1",
            "template": "comments",
            "variables": {"author": "Bob", "text": text},
            "digest": {"key": key, "window_seconds": WINDOW, "max_events": max_events},
            **fields,
        }
    )


def _collect(
    factory: sessionmaker[Session],
    tenant_id: uuid.UUID,
    request: NotificationRequest,
    *,
    policy: TenantPolicy = NO_QUIET_HOURS,
    now: datetime | None = None,
) -> uuid.UUID:
    with transaction(factory) as session:
        digested = collect(session, tenant_id=tenant_id, request=request, policy=policy, rate=None, now=now)
    return digested.send.digest_id


def _close_due(
    factory: sessionmaker[Session], *, rules: AcceptanceSettings = RULES, after: float = WINDOW
) -> int:
    """Close what is due `after` seconds from now (the window's length: every open digest)."""
    with transaction(factory) as session:
        return close_due_digests(
            session, rules=rules, batch_size=10, now=datetime.now(UTC) + timedelta(seconds=after)
        )


def _notification(factory: sessionmaker[Session], id: uuid.UUID) -> Notification:
    with factory() as session:
        return session.get_one(Notification, id)


def _events(factory: sessionmaker[Session], digest_id: uuid.UUID) -> list[str]:
    with factory() as session:
        rows = session.scalars(
            select(DigestEvent.variables)
            .where(DigestEvent.digest_id == digest_id)
            .order_by(DigestEvent.number)
        )
        return [variables["text"] for variables in rows]


def _count(factory: sessionmaker[Session], model: type[Any]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_three_sends_become_one_notification_with_their_events_oldest_first(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    ids = [_collect(factory, tenant_id, _send(text)) for text in ("first", "second", "third")]

    assert len(set(ids)) == 1
    digest_id = ids[0]
    waiting = _notification(factory, digest_id)
    assert (waiting.status, waiting.deferred_reason) == (Status.SCHEDULED, "digest")
    # The scheduler's release of due notifications leaves a collecting digest to the digest job.
    with transaction(factory) as session:
        session.execute(
            text("UPDATE notifications SET scheduled_for = now() - interval '1 s' WHERE id = :id"),
            {"id": digest_id},
        )
        assert release_due_notifications(session, batch_size=10) == 0

    assert _close_due(factory) == 1

    sent = _notification(factory, digest_id)
    assert sent.status == Status.QUEUED
    assert sent.deferred_reason is None and sent.scheduled_for is None
    assert sent.content["subject"] == "3 new comments"
    assert sent.content["body"] == "1. Bob: first\n2. Bob: second\n3. Bob: third\n"
    assert _count(factory, Notification) == 1
    with factory() as session:
        assert session.scalars(select(OutboxMessage.notification_id)).all() == [digest_id]
    assert _close_due(factory) == 0


def test_other_keys_and_users_have_digests_of_their_own(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    comments = _collect(factory, tenant_id, _send("a"))
    likes = _collect(factory, tenant_id, _send("b", key="likes"))
    other_user = _collect(factory, tenant_id, _send("c", user_id="u-2"))

    assert len({comments, likes, other_user}) == 3
    assert [_events(factory, id) for id in (comments, likes, other_user)] == [["a"], ["b"], ["c"]]


def test_a_send_that_fills_the_digest_sends_it_at_once_and_the_next_opens_another(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    first = _collect(factory, tenant_id, _send("one", max_events=2))
    assert _notification(factory, first).status == Status.SCHEDULED

    assert _collect(factory, tenant_id, _send("two", max_events=2)) == first

    full = _notification(factory, first)
    assert full.status == Status.QUEUED
    assert full.content["subject"] == "2 new comments"
    second = _collect(factory, tenant_id, _send("three", max_events=2))
    assert second != first
    assert _events(factory, second) == ["three"]


def test_a_send_after_the_window_ended_closes_it_and_opens_the_next(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    first = _collect(factory, tenant_id, _send("early"))

    later = datetime.now(UTC) + timedelta(seconds=WINDOW)
    second = _collect(factory, tenant_id, _send("late"), now=later)

    assert second != first
    assert _notification(factory, first).content["subject"] == "1 new comments"
    assert _notification(factory, first).status == Status.QUEUED
    assert _events(factory, second) == ["late"]


def test_a_window_ending_in_quiet_hours_goes_out_when_they_end(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    digest_id = _collect(factory, tenant_id, _send("at night"))

    always_quiet = AcceptanceSettings(**{**RULES.model_dump(), "quiet_hours": "00:00-23:59:59"})
    _close_due(factory, rules=always_quiet)

    held = _notification(factory, digest_id)
    assert (held.status, held.deferred_reason) == (Status.SCHEDULED, "quiet_hours")
    assert held.content["subject"] == "1 new comments"
    assert held.scheduled_for is not None
    local_end = held.scheduled_for.astimezone(UTC)
    assert (local_end.hour, local_end.minute, local_end.second) == (23, 59, 59)
    assert _count(factory, OutboxMessage) == 0


def test_a_cancelled_digest_stays_cancelled_and_the_next_send_opens_another(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    first = _collect(factory, tenant_id, _send("one"))
    with transaction(factory) as session:
        cancel_notification(session, tenant_id=tenant_id, id=first)

    second = _collect(factory, tenant_id, _send("two"))

    assert second != first
    assert _notification(factory, first).status == Status.CANCELLED
    _close_due(factory)
    assert _notification(factory, first).status == Status.CANCELLED
    assert _notification(factory, second).status == Status.QUEUED


def test_a_digest_whose_template_went_away_fails_with_the_reason(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    digest_id = _collect(factory, tenant_id, _send("one"))
    with transaction(factory) as session:
        delete_template(session, tenant_id=tenant_id, name="comments")

    _close_due(factory)

    failed = _notification(factory, digest_id)
    assert failed.status == Status.FAILED
    assert failed.last_error is not None and "no template named 'comments'" in failed.last_error


def test_a_send_its_template_cannot_render_is_refused_and_not_collected(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    digest_id = _collect(factory, tenant_id, _send("fine"))
    broken = _send("x")
    broken = broken.model_copy(update={"variables": {"events": "not a list"}})

    with pytest.raises(InvalidInput), transaction(factory) as session:
        collect(session, tenant_id=tenant_id, request=broken, policy=NO_QUIET_HOURS, rate=None)

    assert _events(factory, digest_id) == ["fine"]


# --- concurrency ----------------------------------------------------------------------------------


def _blocked_on_a_lock(factory: sessionmaker[Session], application_name: str) -> bool:
    with factory() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND wait_event_type = 'Lock'"
                ),
                {"name": application_name},
            )
        )


@pytest.fixture
def second_factory(private: Infrastructure) -> Iterator[sessionmaker[Session]]:
    """Sessions of another 'process', named so that the test can see them wait for a lock."""
    engine = create_engine(private.database_url, connect_args={"application_name": "digest-sender"})
    yield make_session_factory(engine)
    engine.dispose()


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(work()))
    thread.start()
    return thread, results


def test_a_send_arriving_while_its_digest_closes_waits_and_opens_the_next_window(
    factory: sessionmaker[Session], second_factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    first = _collect(factory, tenant_id, _send("before"))
    with transaction(factory) as closing:
        # The scheduler holds the digest's lock, closing it; a send arrives meanwhile.
        assert (
            close_due_digests(
                closing, rules=RULES, batch_size=10, now=datetime.now(UTC) + timedelta(seconds=WINDOW)
            )
            == 1
        )
        sender, results = _in_thread(lambda: _collect(second_factory, tenant_id, _send("during")))
        wait_until(lambda: _blocked_on_a_lock(factory, "digest-sender"), what="the send to wait for the lock")
    sender.join(timeout=30)

    [second] = results
    assert second != first
    assert _notification(factory, first).content["body"] == "1. Bob: before\n"
    assert _events(factory, first) == ["before"]
    assert _events(factory, second) == ["during"]
    assert _notification(factory, second).status == Status.SCHEDULED


def test_the_scheduler_skips_a_digest_a_send_is_being_added_to_and_closes_it_with_that_send_later(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    first = _collect(factory, tenant_id, _send("one"))
    with transaction(factory) as adding:
        assert collect(adding, tenant_id=tenant_id, request=_send("two"), policy=NO_QUIET_HOURS, rate=None)
        _, closed = _in_thread(lambda: _close_due(factory))
        wait_until(lambda: closed, what="the scheduler's round")
        assert closed == [0]

    assert _close_due(factory) == 1
    assert _notification(factory, first).content["body"] == "1. Bob: one\n2. Bob: two\n"


def test_concurrent_first_sends_open_one_digest(
    factory: sessionmaker[Session], second_factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    with transaction(factory) as opening:
        first = collect(opening, tenant_id=tenant_id, request=_send("a"), policy=NO_QUIET_HOURS, rate=None)
        sender, results = _in_thread(lambda: _collect(second_factory, tenant_id, _send("b")))
        wait_until(lambda: _blocked_on_a_lock(factory, "digest-sender"), what="the second opener to wait")
    sender.join(timeout=30)

    assert results == [first.send.digest_id]
    assert _events(factory, first.send.digest_id) == ["a", "b"]
    assert _count(factory, Digest) == 1


def test_an_open_digest_outlives_every_process(private: Infrastructure, tenant_id: uuid.UUID) -> None:
    """Nothing of a digest is kept in memory: a 'restarted' gateway and scheduler carry on with it."""

    def fresh() -> sessionmaker[Session]:
        return make_session_factory(create_engine(private.database_url))

    before_restart = fresh()
    digest_id = _collect(before_restart, tenant_id, _send("before"))
    before_restart.kw["bind"].dispose()

    after_restart = fresh()
    assert _collect(after_restart, tenant_id, _send("after")) == digest_id
    assert _close_due(after_restart) == 1
    assert _notification(after_restart, digest_id).content["subject"] == "2 new comments"
    after_restart.kw["bind"].dispose()


def test_tenants_are_apart(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> None:
    with transaction(factory) as session:
        other = create_tenant(session, name=f"digests-{uuid.uuid4().hex[:8]}").id
        create_template(session, tenant_id=other, request=COMMENTS)

    assert _collect(factory, tenant_id, _send("mine")) != _collect(factory, other, _send("theirs"))


def test_an_inapp_digest_escalates_after_its_combined_notification_is_due_not_after_its_window(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    with transaction(factory) as session:
        create_template(
            session,
            tenant_id=tenant_id,
            request=TemplateIn(name="inbox-comments", channel="inapp", body="{{ count }} new comments"),
        )
    escalate = {"after_seconds": 60, "channels": ["email"]}
    digest_id = _collect(
        factory,
        tenant_id,
        _send("at night", channel="inapp", recipient=None, template="inbox-comments", escalate=escalate),
    )

    # The window ends in quiet hours: the combined notification waits for them to end, and so does
    # its escalation (else the email would go out while the inapp one was never shown).
    always_quiet = AcceptanceSettings(**{**RULES.model_dump(), "quiet_hours": "00:00-23:59:59"})
    _close_due(factory, rules=always_quiet)

    held = _notification(factory, digest_id)
    assert (held.status, held.deferred_reason) == (Status.SCHEDULED, "quiet_hours")
    assert held.scheduled_for is not None and held.escalation is not None
    assert held.escalate_at == held.scheduled_for + timedelta(seconds=60)
    assert datetime.fromisoformat(held.escalation["due_at"]) == held.escalate_at
