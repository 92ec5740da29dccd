"""Rate limits per (tenant, channel, user id or recipient): at most `limit` sends per fixed window.

The counters live in PostgreSQL (an UNLOGGED table), so every gateway replica shares them. One
statement counts a whole request (or batch): it adds the sends wanted per key and returns the new
counts; the row locks it takes serialise concurrent requests for the same key until they commit, so
two replicas can never both take the last send. A refused request rolls back with its transaction, so
it uses up nothing.

Windows are aligned to the epoch (every key's minute starts together) and follow the database's
clock, not the gateways'. A fixed window admits a burst of up to twice the limit across a boundary;
in exchange, `RateLimit-Reset` has one plain meaning: when the current window ends.
"""

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import Integer, Text

from pulse.vocabulary import Channel

MAX_WINDOW_SECONDS = 86_400  # A day: counters older than two are deleted.


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` sends per `window_seconds`; a limit of 0 means no limit."""

    limit: int
    window_seconds: int

    @property
    def unlimited(self) -> bool:
        return self.limit == 0


@dataclass(frozen=True)
class RateKey:
    channel: Channel
    subject: str  # `user:<user id>`, else `to:<recipient address>`

    @classmethod
    def of(cls, channel: Channel, *, user_id: str | None, recipient: str) -> "RateKey":
        return cls(channel, f"user:{user_id}" if user_id is not None else f"to:{recipient}")


@dataclass(frozen=True)
class Quota:
    """What one key may still send: the `RateLimit-*` headers, and how many of the wanted sends fit."""

    limit: int
    remaining: int
    reset_seconds: int
    granted: int


_COUNT = text(
    """
    INSERT INTO rate_limit_counters AS counter (tenant_id, channel, subject, window_start, count)
    SELECT :tenant_id, wanted.channel, wanted.subject, current_window.start, wanted.sends
    FROM unnest(:channels, :subjects, :sends) AS wanted (channel, subject, sends),
         (SELECT to_timestamp(floor(extract(epoch FROM now()) / :window) * :window) AS start)
             AS current_window
    -- A stable order takes the row locks in the same order in every transaction: no deadlocks.
    ORDER BY wanted.channel, wanted.subject
    ON CONFLICT (tenant_id, channel, subject) DO UPDATE SET
        count = CASE WHEN counter.window_start = excluded.window_start
                     THEN counter.count + excluded.count ELSE excluded.count END,
        window_start = excluded.window_start
    RETURNING channel, subject, count AS counted,
              extract(epoch FROM window_start - now()) + :window AS reset_seconds
    """
).bindparams(
    bindparam("channels", type_=ARRAY(Text)),
    bindparam("subjects", type_=ARRAY(Text)),
    bindparam("sends", type_=ARRAY(Integer)),
)
_GIVE_BACK = text(
    """
    UPDATE rate_limit_counters AS counter SET count = counter.count - refund.sends
    FROM unnest(:channels, :subjects, :sends) AS refund (channel, subject, sends)
    WHERE counter.tenant_id = :tenant_id
      AND counter.channel = refund.channel AND counter.subject = refund.subject
    """
).bindparams(
    bindparam("channels", type_=ARRAY(Text)),
    bindparam("subjects", type_=ARRAY(Text)),
    bindparam("sends", type_=ARRAY(Integer)),
)


def take(
    session: Session, *, tenant_id: uuid.UUID, rate: RateLimit, wanted: Mapping[RateKey, int]
) -> dict[RateKey, Quota]:
    """Count `wanted` sends per key against the limit, in the caller's transaction; each key's Quota
    says how many were granted (the first ones, up to what is left). Sends not granted are not counted."""
    if not wanted:
        return {}
    keys = list(wanted)
    rows = session.execute(
        _COUNT,
        {
            "tenant_id": tenant_id,
            "window": rate.window_seconds,
            "channels": [str(key.channel) for key in keys],
            "subjects": [key.subject for key in keys],
            "sends": [wanted[key] for key in keys],
        },
    ).all()
    quotas: dict[RateKey, Quota] = {}
    refunds: dict[RateKey, int] = {}
    for row in rows:
        key = RateKey(Channel(row.channel), row.subject)
        before = row.counted - wanted[key]
        granted = max(0, min(wanted[key], rate.limit - before))
        if granted < wanted[key]:
            refunds[key] = wanted[key] - granted
        quotas[key] = Quota(
            limit=rate.limit,
            remaining=max(0, rate.limit - before - granted),
            reset_seconds=max(1, math.ceil(row.reset_seconds)),
            granted=granted,
        )
    if refunds:
        session.execute(
            _GIVE_BACK,
            {
                "tenant_id": tenant_id,
                "channels": [str(key.channel) for key in refunds],
                "subjects": [key.subject for key in refunds],
                "sends": list(refunds.values()),
            },
        )
    return quotas


def delete_stale_counters(session: Session, *, older_than_seconds: int) -> int:
    """Forget counters whose window ended long ago (retention)."""
    result = session.execute(
        text("DELETE FROM rate_limit_counters WHERE window_start < now() - make_interval(secs => :age)"),
        {"age": older_than_seconds},
    )
    return result.rowcount  # type: ignore[attr-defined]
