"""The connection registry in PostgreSQL: the per-user limit holds across processes, rows of a process
that stopped refreshing them go stale and stop counting, and presence reads it all."""

import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.inapp.tokens import EndUser
from pulse.realtime import connections
from tests.conftest import Tenant

STALE_AFTER = timedelta(seconds=30)


def _register(factory: sessionmaker[Session], user: EndUser, process: str) -> uuid.UUID | None:
    with transaction(factory) as session:
        return connections.register(session, user, process_id=process, limit=5, stale_after=STALE_AFTER)


def _presence(factory: sessionmaker[Session], user: EndUser) -> connections.Presence:
    with transaction(factory) as session:
        return connections.presence(session, user, stale_after=STALE_AFTER)


def _age(factory: sessionmaker[Session], ids: list[uuid.UUID], seconds: int) -> None:
    """Make rows look as if their process stopped refreshing them `seconds` ago."""
    with transaction(factory) as session:
        session.execute(
            text(
                "UPDATE realtime_connections SET last_seen_at = now() - make_interval(secs => :s)"
                " WHERE id = ANY(:ids)"
            ),
            {"s": seconds, "ids": ids},
        )


def _user(tenant: Tenant) -> EndUser:
    return EndUser(tenant_id=tenant.id, user_id=f"user-{uuid.uuid4().hex[:8]}")


def test_five_connections_per_user_across_two_processes(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    user, other = _user(tenant), _user(tenant)
    held = [_register(session_factory, user, process) for process in ("a", "b", "a", "b", "a")]
    assert all(held)

    assert _register(session_factory, user, "b") is None
    assert _register(session_factory, user, "a") is None
    assert _register(session_factory, other, "b") is not None  # the limit is per user
    assert _presence(session_factory, user).connections == 5

    with transaction(session_factory) as session:
        connections.release(session, held[0])  # type: ignore[arg-type]
    assert _register(session_factory, user, "b") is not None


def test_stale_rows_stop_counting_and_are_removed_keeping_the_last_seen_time(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    user = _user(make_tenant())
    killed = [_register(session_factory, user, "killed") for _ in range(3)]
    alive = _register(session_factory, user, "alive")
    assert _register(session_factory, user, "alive") is not None  # the fifth
    assert _register(session_factory, user, "alive") is None
    _age(session_factory, killed, 31)  # type: ignore[arg-type]

    presence = _presence(session_factory, user)
    assert presence.online and presence.connections == 2
    # The killed process's slots are free again; its rows are gone, their time kept.
    assert all(_register(session_factory, user, "alive") for _ in range(3))
    assert _register(session_factory, user, "alive") is None
    with transaction(session_factory) as session:
        assert connections.refresh(session, [*killed, alive]) == {alive}  # type: ignore[list-item]


def test_presence_after_the_last_connection_closes_or_goes_stale(
    session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    never, closed, killed = _user(tenant), _user(tenant), _user(tenant)
    assert _presence(session_factory, never) == connections.Presence(
        online=False, connections=0, last_seen_at=None
    )

    connection = _register(session_factory, closed, "a")
    seen_online = _presence(session_factory, closed)
    with transaction(session_factory) as session:
        connections.release(session, connection)  # type: ignore[arg-type]
    offline = _presence(session_factory, closed)
    assert not offline.online and offline.connections == 0
    assert offline.last_seen_at is not None and offline.last_seen_at >= seen_online.last_seen_at  # type: ignore[operator]

    stale = _register(session_factory, killed, "killed")
    _age(session_factory, [stale], 60)  # type: ignore[list-item]
    before_expiry = _presence(session_factory, killed)
    assert not before_expiry.online and before_expiry.connections == 0
    with transaction(session_factory) as session:
        connections.expire_stale(session, stale_after=STALE_AFTER)
        remaining = session.scalar(
            text("SELECT count(*) FROM realtime_connections WHERE tenant_id = :t AND user_id = :u"),
            {"t": killed.tenant_id, "u": killed.user_id},
        )
    assert remaining == 0
    assert _presence(session_factory, killed).last_seen_at == before_expiry.last_seen_at
