"""Rate limits: per recipient (its user id, and its address) and per tenant, over fixed windows.

A send counts against up to three counters: its user's (`user:<user id>`, when it names one) and its
address's (`to:<address>`, normalised) per (tenant, channel), both held to the per-recipient limit,
so that neither varying the user id nor the spelling of an address lifts it; and its tenant's quota,
all channels together, per minute, so that one tenant cannot fill the shared queues. A webhook URL
is the sender's own endpoint rather than a person's: it counts only for sends without a user id.

The counters live in PostgreSQL (an UNLOGGED table), so every gateway replica shares them. One
statement counts a whole request (or batch): it adds the sends wanted per counter and returns the
new counts; the row locks it takes serialise concurrent requests for the same recipient until they
commit, so two replicas can never both take a recipient's last send. A refused request rolls back
with its transaction, so it uses up nothing.

The tenant's quota is spread over QUOTA_SLOTS counters, one picked at random per request, so that
a tenant's concurrent requests do not all queue for one row lock; the statement adds the other
slots' committed counts. The quota is therefore exact for sequential requests and may be exceeded
by the sends in flight at the same instant.

Windows are aligned to the epoch (every key's minute starts together) and follow the database's
clock, not the gateways'. A fixed window admits a burst of up to twice the limit across a boundary;
in exchange, `RateLimit-Reset` has one plain meaning: when the current window ends.
"""

import math
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session
from sqlalchemy.types import Integer, Text

from pulse.db.arrays import BinaryArray
from pulse.errors import QuotaExceeded, RateLimited
from pulse.vocabulary import Channel

MAX_WINDOW_SECONDS = 86_400  # A day: counters older than two are deleted.
QUOTA_WINDOW_SECONDS = 60  # Tenant quotas are per minute.
QUOTA_SLOTS = 32
_ALL_CHANNELS = "*"  # The `channel` of a tenant's quota counters.


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` sends per `window_seconds`; a limit of 0 means no limit."""

    limit: int
    window_seconds: int

    @property
    def unlimited(self) -> bool:
        return self.limit == 0


@dataclass(frozen=True)
class SendLimits:
    """What a tenant's sends are held to."""

    per_recipient: RateLimit
    # Per QUOTA_WINDOW_SECONDS, every channel together.
    per_tenant: RateLimit


class Send(NamedTuple):
    """Whom one send goes to, which is all a rate limit looks at. A tuple: a fan-out's chunk makes and
    hashes thousands (a frozen dataclass took several times longer for both)."""

    channel: Channel
    user_id: str | None
    recipient: str  # As validated for the channel (e.g. E.164, normalised email address).


@dataclass(frozen=True)
class Quota:
    """The `RateLimit-*` headers of a send: its most constrained counter after the request."""

    limit: int
    remaining: int
    reset_seconds: int


@dataclass(frozen=True)
class Admission:
    # Per send: its Quota (sends without any limit have none).
    quotas: dict[Send, Quota]
    # The refused sends, by their position in the request.
    refusals: dict[int, RateLimited]


# Compared by identity (fast to hash: a chunk of a fan-out counts thousands): `admit` makes one
# instance per (channel, subject). Not frozen: a frozen dataclass's __init__ costs several times more.
@dataclass(eq=False, slots=True)
class _Counter:
    channel: str
    subject: str
    rate: RateLimit


_COUNT = text(
    """
    WITH counted AS (
        INSERT INTO rate_limit_counters AS counter (tenant_id, channel, subject, window_start, count)
        SELECT :tenant_id, wanted.channel, wanted.subject,
               to_timestamp(floor(extract(epoch FROM now()) / wanted.seconds) * wanted.seconds),
               wanted.sends
        FROM unnest(:channels, :subjects, :sends, :seconds) AS wanted (channel, subject, sends, seconds)
        -- A stable order takes the row locks in the same order in every transaction: no deadlocks.
        ORDER BY wanted.channel, wanted.subject
        ON CONFLICT (tenant_id, channel, subject) DO UPDATE SET
            count = CASE WHEN counter.window_start = excluded.window_start
                         THEN counter.count + excluded.count ELSE excluded.count END,
            window_start = excluded.window_start
        RETURNING channel, subject, count, window_start
    )
    SELECT channel, subject, count AS counted, extract(epoch FROM now() - window_start) AS elapsed,
           -- The tenant's other quota slots, as committed (not locked: see the module docstring).
           (SELECT coalesce(sum(slot.count), 0) FROM rate_limit_counters AS slot
            WHERE slot.tenant_id = :tenant_id AND slot.channel = :all_channels
              AND slot.subject <> :quota_slot
              AND slot.window_start = to_timestamp(
                  floor(extract(epoch FROM now()) / :quota_window) * :quota_window)
           ) AS other_slots
    FROM counted
    """
).bindparams(
    bindparam("channels", type_=BinaryArray(Text)),
    bindparam("subjects", type_=BinaryArray(Text)),
    bindparam("sends", type_=BinaryArray(Integer)),
    bindparam("seconds", type_=BinaryArray(Integer)),
)
_GIVE_BACK = text(
    """
    UPDATE rate_limit_counters AS counter SET count = counter.count - refund.sends
    FROM unnest(:channels, :subjects, :sends) AS refund (channel, subject, sends)
    WHERE counter.tenant_id = :tenant_id
      AND counter.channel = refund.channel AND counter.subject = refund.subject
    """
).bindparams(
    bindparam("channels", type_=BinaryArray(Text)),
    bindparam("subjects", type_=BinaryArray(Text)),
    bindparam("sends", type_=BinaryArray(Integer)),
)


def admit(session: Session, *, tenant_id: uuid.UUID, limits: SendLimits, sends: Sequence[Send]) -> Admission:
    """Count `sends` against their counters, in the caller's transaction, in one statement (two when
    some are refused: what they took is given back). A send is refused when one of its counters is
    spent; the first sends of a request are the ones admitted."""
    quota_slot = _Counter(_ALL_CHANNELS, f"quota:{random.randrange(QUOTA_SLOTS)}", limits.per_tenant)
    known: dict[tuple[str, str], _Counter] = {}
    counters_of = [_counters(send, limits, quota_slot, known) for send in sends]
    wanted = Counter(counter for counters in counters_of for counter in counters)
    if not wanted:
        return Admission(quotas={}, refusals={})
    by_name = {(counter.channel, counter.subject): counter for counter in wanted}
    rows = session.execute(
        _COUNT,
        {
            "tenant_id": tenant_id,
            "channels": [counter.channel for counter in wanted],
            "subjects": [counter.subject for counter in wanted],
            "sends": list(wanted.values()),
            "seconds": [counter.rate.window_seconds for counter in wanted],
            "all_channels": _ALL_CHANNELS,
            "quota_slot": quota_slot.subject,
            "quota_window": QUOTA_WINDOW_SECONDS,
        },
    ).all()
    left: dict[_Counter, int] = {}
    reset_seconds: dict[_Counter, int] = {}
    for channel, subject, counted, elapsed, other_slots in rows:
        counter = by_name[(channel, subject)]
        used_before = counted - wanted[counter] + (other_slots if counter is quota_slot else 0)
        left[counter] = counter.rate.limit - used_before
        reset_seconds[counter] = max(1, math.ceil(counter.rate.window_seconds - elapsed))

    refusals: dict[int, RateLimited] = {}
    if all(left[counter] >= sends_wanted for counter, sends_wanted in wanted.items()):
        # Every counter has room for all its sends (the usual case): all are granted, which the
        # send-by-send pass below would conclude too, at a cost per send.
        for counter, sends_wanted in wanted.items():
            left[counter] -= sends_wanted
        return Admission(quotas=_quotas(sends, counters_of, left, reset_seconds), refusals=refusals)
    granted: dict[_Counter, int] = dict.fromkeys(wanted, 0)
    for index, counters in enumerate(counters_of):
        for counter in counters:
            if left[counter] <= 0:
                refusals[index] = _refusal(counter, sends[index], reset_seconds[counter])
                break
        else:
            for counter in counters:
                left[counter] -= 1
                granted[counter] += 1
    refunds = {counter: wanted[counter] - granted[counter] for counter in wanted}
    if any(refunds.values()):
        session.execute(
            _GIVE_BACK,
            {
                "tenant_id": tenant_id,
                "channels": [counter.channel for counter in refunds],
                "subjects": [counter.subject for counter in refunds],
                "sends": list(refunds.values()),
            },
        )
    return Admission(quotas=_quotas(sends, counters_of, left, reset_seconds), refusals=refusals)


def _quotas(
    sends: Sequence[Send],
    counters_of: list[list[_Counter]],
    left: dict[_Counter, int],
    reset_seconds: dict[_Counter, int],
) -> dict[Send, Quota]:
    """Each send's Quota: its tightest counter's, after the request."""
    quotas = {}
    # One Quota per distinct value: a fan-out's sends mostly end with the same headers.
    distinct: dict[tuple[int, int, int], Quota] = {}
    for send, counters in zip(sends, counters_of, strict=True):
        if counters:
            tightest = min(counters, key=left.__getitem__)
            headers = (tightest.rate.limit, max(0, left[tightest]), reset_seconds[tightest])
            quota = distinct.get(headers)
            if quota is None:
                quota = distinct[headers] = Quota(*headers)
            quotas[send] = quota
    return quotas


def address_key(channel: Channel, recipient: str) -> str:
    """The address a recipient limit counts: one mailbox however its address is spelled (case, a
    `+tag` sub-address); other channels' addresses arrive normalised already."""
    if channel is not Channel.EMAIL:
        return recipient
    local, _, domain = recipient.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}".casefold()


def _counters(
    send: Send, limits: SendLimits, quota_slot: _Counter, known: dict[tuple[str, str], _Counter]
) -> list[_Counter]:
    """The send's counters, the same instance for the same (channel, subject) across `known`."""
    subjects = []
    if not limits.per_recipient.unlimited:
        if send.user_id is not None:
            subjects.append(f"user:{send.user_id}")
        if send.user_id is None or send.channel is not Channel.WEBHOOK:
            subjects.append(f"to:{address_key(send.channel, send.recipient)}")
    channel = str(send.channel)
    counters = []
    for subject in subjects:
        counter = known.get((channel, subject))
        if counter is None:
            counter = known[(channel, subject)] = _Counter(channel, subject, limits.per_recipient)
        counters.append(counter)
    if not limits.per_tenant.unlimited:
        counters.append(quota_slot)
    return counters


def _refusal(counter: _Counter, send: Send, reset_seconds: int) -> RateLimited:
    limit, window = counter.rate.limit, counter.rate.window_seconds
    refusal: type[RateLimited] = RateLimited
    if counter.channel == _ALL_CHANNELS:
        refusal = QuotaExceeded
        what = f"tenant quota exceeded: at most {limit} notifications per {window} s from this tenant"
    else:
        whom = f"user {send.user_id}" if counter.subject.startswith("user:") else send.recipient
        what = f"rate limit exceeded: at most {limit} {send.channel} notifications per {window} s to {whom}"
    return refusal(f"{what}; try again in {reset_seconds} s", limit=limit, reset_seconds=reset_seconds)


def delete_stale_counters(session: Session, *, older_than_seconds: int) -> int:
    """Forget counters whose window ended long ago (retention)."""
    result = session.execute(
        text("DELETE FROM rate_limit_counters WHERE window_start < now() - make_interval(secs => :age)"),
        {"age": older_than_seconds},
    )
    return result.rowcount  # type: ignore[attr-defined]
