"""Open WebSocket connections, recorded in PostgreSQL so that every realtime process sees them all: the
limit of connections per user holds across processes, and the gateway answers presence.

Each process refreshes `last_seen_at` of its own rows every heartbeat; a row not refreshed for
`stale_after` belongs to a process that died (say, kill -9) and no longer counts. Stale rows are removed
(their time kept as the user's last-seen) by the next connect of that user and by every heartbeat.
"""

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.orm import Session

from pulse.inapp.tokens import EndUser


class Presence(BaseModel):
    online: bool = Field(description="Whether the user has at least one open connection.")
    connections: int = Field(description="Open connections of the user, across every realtime process.")
    last_seen_at: datetime | None = Field(
        description="The last time a connection of the user was known alive; null if never connected."
    )


# Stale rows leave, their last-seen time kept for presence (the newest one per user).
_EXPIRE = """
WITH gone AS (
    DELETE FROM realtime_connections WHERE last_seen_at < now() - :stale_after {and_user}
    RETURNING tenant_id, user_id, last_seen_at
)
INSERT INTO realtime_last_seen (tenant_id, user_id, last_seen_at)
SELECT tenant_id, user_id, max(last_seen_at) FROM gone GROUP BY tenant_id, user_id
ON CONFLICT (tenant_id, user_id)
DO UPDATE SET last_seen_at = greatest(realtime_last_seen.last_seen_at, excluded.last_seen_at)
"""
_EXPIRE_ALL = text(_EXPIRE.format(and_user=""))
_EXPIRE_USER = text(_EXPIRE.format(and_user="AND tenant_id = :tenant_id AND user_id = :user_id"))


def _user(end_user: EndUser) -> dict[str, object]:
    return {"tenant_id": end_user.tenant_id, "user_id": end_user.user_id}


def register(
    session: Session, end_user: EndUser, *, process_id: str, limit: int, stale_after: timedelta
) -> uuid.UUID | None:
    """Record a new connection of `end_user` held by `process_id`, unless the user already has `limit`
    fresh ones (then None). Concurrent connects of one user, on any process, take turns."""
    # One lock per user (a hash collision only makes two users take turns), released at commit.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:tenant_id || '/' || :user_id, 0))"),
        {"tenant_id": str(end_user.tenant_id), "user_id": end_user.user_id},
    )
    session.execute(_EXPIRE_USER, {**_user(end_user), "stale_after": stale_after})
    count = session.scalar(
        text("SELECT count(*) FROM realtime_connections WHERE tenant_id = :tenant_id AND user_id = :user_id"),
        _user(end_user),
    )
    if count is not None and count >= limit:
        return None
    connection_id = uuid.uuid4()
    session.execute(
        text(
            "INSERT INTO realtime_connections (id, tenant_id, user_id, process_id)"
            " VALUES (:id, :tenant_id, :user_id, :process_id)"
        ),
        {"id": connection_id, **_user(end_user), "process_id": process_id},
    )
    return connection_id


def release(session: Session, connection_id: uuid.UUID) -> None:
    """A connection closed: its row goes, and its user's last-seen time is now."""
    session.execute(
        text(
            """
            WITH gone AS (DELETE FROM realtime_connections WHERE id = :id RETURNING tenant_id, user_id)
            INSERT INTO realtime_last_seen (tenant_id, user_id, last_seen_at)
            SELECT tenant_id, user_id, now() FROM gone
            ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seen_at = excluded.last_seen_at
            """
        ),
        {"id": connection_id},
    )


def refresh(session: Session, connection_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Mark these connections alive now; returns those still recorded (a row found stale and removed
    while its process stalled is not brought back: that connection no longer counts)."""
    if not connection_ids:
        return set()
    rows = session.execute(
        text("UPDATE realtime_connections SET last_seen_at = now() WHERE id = ANY(:ids) RETURNING id"),
        {"ids": list(connection_ids)},
    )
    return set(rows.scalars())


def expire_stale(session: Session, *, stale_after: timedelta) -> None:
    """Remove every stale connection (of processes that died), keeping their users' last-seen time."""
    session.execute(_EXPIRE_ALL, {"stale_after": stale_after})


def presence(session: Session, end_user: EndUser, *, stale_after: timedelta) -> Presence:
    """Whether the user is connected (fresh rows only) and when they were last seen."""
    row = session.execute(
        text(
            """
            SELECT count(*) FILTER (WHERE c.last_seen_at >= now() - :stale_after) AS connections,
                   greatest(max(c.last_seen_at), (
                       SELECT s.last_seen_at FROM realtime_last_seen AS s
                       WHERE s.tenant_id = :tenant_id AND s.user_id = :user_id
                   )) AS last_seen_at
            FROM realtime_connections AS c WHERE c.tenant_id = :tenant_id AND c.user_id = :user_id
            """
        ),
        {**_user(end_user), "stale_after": stale_after},
    ).one()
    return Presence(online=row.connections > 0, connections=row.connections, last_seen_at=row.last_seen_at)
