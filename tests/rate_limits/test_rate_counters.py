"""The rate-limit counters in PostgreSQL: grants, refusals, windows, concurrency (shared database)."""

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import RateLimitCounter, Tenant
from pulse.rate_limits.service import RateKey, RateLimit, delete_stale_counters, take
from pulse.vocabulary import Channel

TEN_PER_MINUTE = RateLimit(limit=10, window_seconds=60)


def _key(user: str = "u1", channel: Channel = Channel.EMAIL) -> RateKey:
    return RateKey.of(channel, user_id=user, recipient="ignored@example.com")


def test_the_eleventh_send_in_a_window_is_not_granted(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, key = make_tenant(), _key()
    granted = []
    for _ in range(11):
        with transaction(session_factory) as session:
            quota = take(session, tenant_id=tenant.id, rate=TEN_PER_MINUTE, wanted={key: 1})[key]
            granted.append(quota.granted)
    assert granted == [1] * 10 + [0]
    assert quota.remaining == 0 and quota.limit == 10
    assert 1 <= quota.reset_seconds <= 60


def test_keys_are_counted_apart_by_user_channel_and_tenant(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other_tenant = make_tenant(), make_tenant()
    rate = RateLimit(limit=1, window_seconds=60)
    keys = [_key("u1"), _key("u2"), _key("u1", Channel.SMS)]
    with transaction(session_factory) as session:
        quotas = take(session, tenant_id=tenant.id, rate=rate, wanted=dict.fromkeys(keys, 1))
        assert [quotas[key].granted for key in keys] == [1, 1, 1]
        assert take(session, tenant_id=other_tenant.id, rate=rate, wanted={keys[0]: 1})[keys[0]].granted == 1
        assert take(session, tenant_id=tenant.id, rate=rate, wanted={keys[0]: 1})[keys[0]].granted == 0


def test_a_batch_is_granted_what_is_left_and_only_that_is_counted(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, key = make_tenant(), _key()
    with transaction(session_factory) as session:
        first = take(session, tenant_id=tenant.id, rate=TEN_PER_MINUTE, wanted={key: 7})[key]
        second = take(session, tenant_id=tenant.id, rate=TEN_PER_MINUTE, wanted={key: 7})[key]
        assert (first.granted, first.remaining) == (7, 3)
        assert (second.granted, second.remaining) == (3, 0)
        assert session.get_one(RateLimitCounter, (tenant.id, "email", key.subject)).count == 10


def test_a_rolled_back_request_uses_up_nothing(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, key, rate = make_tenant(), _key(), RateLimit(limit=1, window_seconds=60)
    with session_factory() as session:
        assert take(session, tenant_id=tenant.id, rate=rate, wanted={key: 1})[key].granted == 1
        session.rollback()
    with transaction(session_factory) as session:
        assert take(session, tenant_id=tenant.id, rate=rate, wanted={key: 1})[key].granted == 1


def test_a_new_window_starts_from_zero(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, key, rate = make_tenant(), _key(), RateLimit(limit=1, window_seconds=60)
    with transaction(session_factory) as session:
        take(session, tenant_id=tenant.id, rate=rate, wanted={key: 1})
        # The window this count belongs to ended an hour ago.
        session.execute(
            update(RateLimitCounter)
            .where(RateLimitCounter.tenant_id == tenant.id)
            .values(window_start=RateLimitCounter.window_start - timedelta(hours=1))
        )
        assert take(session, tenant_id=tenant.id, rate=rate, wanted={key: 1})[key].granted == 1


def test_concurrent_requests_never_exceed_the_limit(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, key = make_tenant(), RateKey(Channel.SMS, f"user:{uuid.uuid4()}")
    granted: list[int] = []
    start = threading.Barrier(8)

    def request() -> None:
        start.wait()
        for _ in range(5):
            with transaction(session_factory) as session:
                granted.append(
                    take(session, tenant_id=tenant.id, rate=TEN_PER_MINUTE, wanted={key: 1})[key].granted
                )

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 10 and len(granted) == 40


def test_stale_counters_are_deleted(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, key = make_tenant(), _key()
    with transaction(session_factory) as session:
        take(session, tenant_id=tenant.id, rate=TEN_PER_MINUTE, wanted={key: 1})
        assert delete_stale_counters(session, older_than_seconds=3600) == 0
        assert delete_stale_counters(session, older_than_seconds=0) >= 1
