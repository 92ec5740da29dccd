"""The rate-limit counters in PostgreSQL: grants, refusals, windows, quotas, concurrency (shared database)."""

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import RateLimitCounter, Tenant
from pulse.rate_limits.service import (
    QUOTA_WINDOW_SECONDS,
    Admission,
    RateLimit,
    Send,
    SendLimits,
    admit,
    delete_stale_counters,
)
from pulse.vocabulary import Channel

NO_LIMIT = RateLimit(limit=0, window_seconds=60)
TEN_PER_MINUTE = SendLimits(per_recipient=RateLimit(limit=10, window_seconds=60), per_tenant=NO_LIMIT)
ONE_PER_MINUTE = SendLimits(per_recipient=RateLimit(limit=1, window_seconds=60), per_tenant=NO_LIMIT)


def _send(user: str | None = "u1", channel: Channel = Channel.EMAIL, to: str = "ada@example.com") -> Send:
    return Send(channel, user_id=user, recipient=to)


def _admit(session: Session, tenant: Tenant, *sends: Send, limits: SendLimits = ONE_PER_MINUTE) -> Admission:
    return admit(session, tenant_id=tenant.id, limits=limits, sends=sends)


def _admitted(admission: Admission, count: int) -> list[bool]:
    return [index not in admission.refusals for index in range(count)]


def test_the_eleventh_send_in_a_window_is_refused(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, send = make_tenant(), _send()
    admitted = []
    for _ in range(11):
        with transaction(session_factory) as session:
            admission = _admit(session, tenant, send, limits=TEN_PER_MINUTE)
            admitted += _admitted(admission, 1)
    assert admitted == [True] * 10 + [False]
    quota = admission.quotas[send]
    assert quota.remaining == 0 and quota.limit == 10
    assert 1 <= quota.reset_seconds <= 60
    refusal = admission.refusals[0]
    assert "at most 10 email notifications per 60 s to user u1" in str(refusal)
    assert refusal.reset_seconds == quota.reset_seconds


def test_counters_are_apart_by_recipient_channel_and_tenant(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other_tenant = make_tenant(), make_tenant()
    sends = [
        _send("u1", to="ada@example.com"),
        _send("u2", to="bob@example.com"),
        _send("u1", Channel.SMS, to="+14155550100"),
    ]
    with transaction(session_factory) as session:
        assert _admitted(_admit(session, tenant, *sends), 3) == [True, True, True]
        assert _admitted(_admit(session, other_tenant, sends[0]), 1) == [True]
        assert _admitted(_admit(session, tenant, sends[0]), 1) == [False]


def test_a_recipient_is_counted_by_its_address_whatever_the_user_id(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    phone = [_send(f"user-{n}", Channel.SMS, to="+14155550100") for n in range(3)]
    with transaction(session_factory) as session:
        admission = _admit(session, tenant, *phone)
        assert _admitted(admission, 3) == [True, False, False]
        assert "+14155550100" in str(admission.refusals[1])
        # One mailbox, however it is spelled; and one user, whatever the address.
        assert _admitted(_admit(session, tenant, _send(None, to="ada@example.com")), 1) == [True]
        assert _admitted(_admit(session, tenant, _send(None, to="Ada+news@example.com")), 1) == [False]
        assert _admitted(_admit(session, tenant, _send("u9", to="eve@example.com")), 1) == [True]
        assert _admitted(_admit(session, tenant, _send("u9", to="mallory@example.com")), 1) == [False]


def test_a_webhook_url_is_the_senders_own_endpoint_and_counts_only_without_a_user_id(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, url = make_tenant(), "https://hooks.example.com/pulse"
    users = [_send(f"user-{n}", Channel.WEBHOOK, to=url) for n in range(3)]
    with transaction(session_factory) as session:
        assert _admitted(_admit(session, tenant, *users), 3) == [True] * 3
        anonymous = [_send(None, Channel.WEBHOOK, to=url)] * 2
        assert _admitted(_admit(session, tenant, *anonymous), 2) == [True, False]


def test_a_batch_is_admitted_what_is_left_and_only_that_is_counted(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, send = make_tenant(), _send()
    with transaction(session_factory) as session:
        first = _admit(session, tenant, *[send] * 7, limits=TEN_PER_MINUTE)
        second = _admit(session, tenant, *[send] * 7, limits=TEN_PER_MINUTE)
        assert (len(first.refusals), first.quotas[send].remaining) == (0, 3)
        assert (sorted(second.refusals), second.quotas[send].remaining) == ([3, 4, 5, 6], 0)
        counts = session.scalars(
            select(RateLimitCounter.count).where(RateLimitCounter.tenant_id == tenant.id)
        )
        assert sorted(counts) == [10, 10]  # The user's and the address's.


def test_a_rolled_back_request_uses_up_nothing(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, send = make_tenant(), _send()
    with session_factory() as session:
        assert _admitted(_admit(session, tenant, send), 1) == [True]
        session.rollback()
    with transaction(session_factory) as session:
        assert _admitted(_admit(session, tenant, send), 1) == [True]


def test_a_new_window_starts_from_zero(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, send = make_tenant(), _send()
    with transaction(session_factory) as session:
        _admit(session, tenant, send)
        # The window this count belongs to ended an hour ago.
        session.execute(
            update(RateLimitCounter)
            .where(RateLimitCounter.tenant_id == tenant.id)
            .values(window_start=RateLimitCounter.window_start - timedelta(hours=1))
        )
        assert _admitted(_admit(session, tenant, send), 1) == [True]


def test_a_tenants_quota_counts_every_send_whoever_it_goes_to(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other_tenant = make_tenant(), make_tenant()
    quota = SendLimits(
        per_recipient=NO_LIMIT, per_tenant=RateLimit(limit=5, window_seconds=QUOTA_WINDOW_SECONDS)
    )
    admitted = []
    # One request at a time: each picks its own quota slot, and sees the others' counts.
    for n in range(7):
        with transaction(session_factory) as session:
            admission = _admit(session, tenant, _send(f"u{n}", to=f"user{n}@example.com"), limits=quota)
            admitted += _admitted(admission, 1)

    assert admitted == [True] * 5 + [False] * 2
    assert "tenant quota exceeded: at most 5 notifications per 60 s" in str(admission.refusals[0])
    with transaction(session_factory) as session:
        batch = [_send(f"u{n}", to=f"user{n}@example.com") for n in range(7)]
        assert _admitted(_admit(session, other_tenant, *batch, limits=quota), 7) == [True] * 5 + [False] * 2
        counted = session.scalar(
            select(func.sum(RateLimitCounter.count)).where(RateLimitCounter.tenant_id == other_tenant.id)
        )
        assert counted == 5  # The refused sends were given back.


def test_concurrent_requests_never_exceed_a_recipients_limit(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, send = make_tenant(), _send(f"user-{uuid.uuid4()}", Channel.SMS, to="+14155550100")
    admitted: list[bool] = []
    start = threading.Barrier(8)

    def request() -> None:
        start.wait()
        for _ in range(5):
            with transaction(session_factory) as session:
                admitted.extend(_admitted(_admit(session, tenant, send, limits=TEN_PER_MINUTE), 1))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 10 and len(admitted) == 40


def test_stale_counters_are_deleted(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    with transaction(session_factory) as session:
        _admit(session, tenant, _send())
        assert delete_stale_counters(session, older_than_seconds=3600) == 0
        assert delete_stale_counters(session, older_than_seconds=0) >= 1
