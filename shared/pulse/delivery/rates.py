"""Provider send-rate limits: one token bucket per provider account (per receiver host for webhooks),
in PostgreSQL, shared by every worker process and replica.

A batch books the tokens of its sends in one statement, on the database's clock: the bucket refills
at its rate up to its burst, and may be booked up to `max_wait_seconds` ahead (its tokens then go
below zero), so that each send knows when its token comes and waits for it — sends leave paced,
never faster than the rate plus the burst, whichever worker makes them. What cannot be booked within
that time is put back without using an attempt, and comes again about when its tokens will have
accrued. The row lock the statement takes serialises the workers' bookings of one bucket.

A provider answering "too many" (HTTP 429, an SMTP 4xx saying so) pauses its bucket until its Retry-After (or
DEFAULT_PAUSE_SECONDS) and halves its rate; after the pause the rate doubles back every
RECOVERY_SECONDS. The throttled notification goes back without using an attempt.
"""

import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import Float, Integer, Text

from pulse.delivery.circuit import ProviderChain
from pulse.delivery.providers import Claim, DestinationHost, Provider
from pulse.observability.metrics import PROVIDER_RATE_LIMITED, PROVIDER_RATE_WAIT, PROVIDER_TOKENS
from pulse.send_rate import SendRate

log = logging.getLogger(__name__)

DEFAULT_PAUSE_SECONDS = 1.0  # When a provider throttles without saying for how long.
RECOVERY_SECONDS = 10.0  # After a pause, a slowed rate doubles back this often.
SLOWEST = 1 / 64  # The most a bucket is slowed down: a 64th of its rate.
IDLE_BUCKET_SECONDS = 86_400  # A bucket untouched for a day is forgotten (see delete_idle_buckets).

# The bucket's rate now (slowed down after a throttle, recovering after the pause) and its tokens now
# (refilled since `refilled_at`, but not during a pause; at most the burst), from `b` (the bucket's
# row) and `w` (the configured `rate` and `burst`), as the statements below name them.
_NOW = "statement_timestamp()"
_RATE_NOW = f"""
    w.rate * least(1.0, b.slowdown * power(2.0, greatest(0.0,
        extract(epoch FROM {_NOW} - coalesce(b.paused_until, b.refilled_at))::float8) / :recovery))"""
_TOKENS_NOW = f"""
    least(w.burst, b.tokens + r.rate_now * greatest(0.0,
        extract(epoch FROM {_NOW} - greatest(b.refilled_at, b.paused_until))::float8))"""
_PAUSED_FOR = f"greatest(0.0, extract(epoch FROM coalesce(b.paused_until, {_NOW}) - {_NOW})::float8)"

_ARRAYS = (
    bindparam("keys", type_=ARRAY(Text)),
    bindparam("rates", type_=ARRAY(Float)),
    bindparam("bursts", type_=ARRAY(Integer)),
)
_CREATE = text(
    """
    INSERT INTO provider_send_buckets (key, tokens, refilled_at)
    SELECT key, burst, statement_timestamp() FROM unnest(:keys, :bursts) AS w (key, burst) ORDER BY key
    ON CONFLICT (key) DO NOTHING
    """
).bindparams(_ARRAYS[0], _ARRAYS[2])


def _buckets_now(wanted: str) -> str:
    """The buckets named by `:keys`, locked in key order (two batches wanting the same ones never
    deadlock), each with `w` (the unnested arrays `wanted` names), its rate, tokens and pause state."""
    return f"""
        SELECT w.*, r.rate_now, t.available, p.paused_for
        FROM (SELECT * FROM provider_send_buckets WHERE key = ANY(:keys) ORDER BY key FOR UPDATE) AS b
        JOIN unnest({wanted}) USING (key)
        CROSS JOIN LATERAL (SELECT {_RATE_NOW} AS rate_now) AS r
        CROSS JOIN LATERAL (SELECT {_TOKENS_NOW} AS available) AS t
        CROSS JOIN LATERAL (SELECT {_PAUSED_FOR} AS paused_for) AS p
    """  # noqa: S608 - this module's constant fragments only


# Books up to `want` tokens of each bucket: as many as are there now or will be within `max_wait`.
# `refilled_at` never goes back: a statement that waited for the lock started before the one it
# waited for refilled the bucket, and must not refill that time again.
_BOOK = text(
    f"""
    UPDATE provider_send_buckets AS bucket
    SET tokens = booked.available - booked.granted, refilled_at = greatest(bucket.refilled_at, {_NOW})
    FROM (
        SELECT *, CASE WHEN paused_for > 0 THEN 0
                       ELSE least(want, greatest(0, floor(available + rate_now * :max_wait)))::int
                  END AS granted
        FROM ({_buckets_now(":keys, :wants, :rates, :bursts) AS w (key, want, rate, burst")}) AS state
    ) AS booked
    WHERE bucket.key = booked.key
    RETURNING bucket.key, booked.want AS wanted, booked.granted, booked.available, booked.rate_now AS rate,
              booked.paused_for
    """  # noqa: S608 - this module's constant fragments only
).bindparams(*_ARRAYS, bindparam("wants", type_=ARRAY(Integer)))
# Tokens that accrued are dropped (they would go straight into the throttle); a throttle while the
# bucket is paused already extends the pause without slowing it down again.
_THROTTLE = text(
    f"""
    UPDATE provider_send_buckets AS bucket SET
        tokens = least(0.0, state.available),
        refilled_at = greatest(bucket.refilled_at, {_NOW}),
        slowdown = CASE WHEN state.paused_for > 0 THEN bucket.slowdown
                        ELSE greatest(:slowest, state.rate_now / state.rate / 2) END,
        paused_until = greatest(bucket.paused_until, {_NOW} + make_interval(secs => state.pause))
    FROM ({_buckets_now(":keys, :pauses, :rates, :bursts) AS w (key, pause, rate, burst")}) AS state
    WHERE bucket.key = state.key
    """  # noqa: S608 - this module's constant fragments only
).bindparams(*_ARRAYS, bindparam("pauses", type_=ARRAY(Float)))


@dataclass(frozen=True)
class Booking:
    """What one bucket gave a batch: `granted` sends, the n-th of them `slot(n)` seconds from now;
    the rest are to come back in `retry_in` seconds."""

    key: str
    wanted: int
    granted: int
    available: float  # Tokens there were (below zero: booked ahead by others).
    rate: float  # Tokens per second now.
    paused_for: float  # Seconds the bucket stays paused.
    max_wait: float

    def slot(self, n: int) -> float:
        return max(0.0, (n + 1 - self.available) / self.rate)

    @property
    def retry_in(self) -> float:
        return self.paused_for + max(0.0, (self.wanted - self.available) / self.rate - self.max_wait)


@dataclass(frozen=True)
class Scheduled:
    """A claimed send and how long after the batch's start it may go."""

    claim: Claim
    delay: float
    bucket: str | None = None


class SendRates:
    """The send-rate limits of a channel's providers, by provider name; the limit of a provider that
    delivers to tenants' hosts (webhooks) applies to each host apart. `max_wait_seconds`: how far
    ahead a batch may book tokens (keep it well under the claim lease)."""

    def __init__(self, limits: Mapping[str, SendRate | None], *, max_wait_seconds: float) -> None:
        self._limits = {name: rate for name, rate in limits.items() if rate is not None}
        self._max_wait = max_wait_seconds

    @property
    def limited(self) -> bool:
        """Whether any provider is limited (if none, sends cost no database round trip)."""
        return bool(self._limits)

    def bucket(self, provider: Provider, claim: Claim) -> tuple[str, SendRate] | None:
        """The bucket a send of `claim` through `provider` takes its token from, if it is limited."""
        rate = self._limits.get(provider.name)
        if rate is None:
            return None
        if isinstance(provider, DestinationHost):
            return f"{provider.name} {provider.destination(claim)}", rate
        return provider.name, rate

    def schedule(
        self, session: Session, claims: Sequence[Claim], providers: ProviderChain
    ) -> tuple[list[Scheduled], list[tuple[Claim, float]]]:
        """Book the tokens of the claims' sends, each from the bucket of the provider it goes to first
        (none when that one is not limited: it goes at once). Returns the sends to make, with their
        delays, and the claims for which no token came in time, with the seconds to come back in."""
        buckets: list[tuple[Claim, tuple[str, SendRate] | None]] = []
        for claim in claims:
            provider = providers.first_choice(claim)
            buckets.append((claim, None if provider is None else self.bucket(provider, claim)))
        wanted = Counter(bucket for _, bucket in buckets if bucket is not None)
        if not wanted:
            return [Scheduled(claim, 0.0) for claim in claims], []
        bookings = self._book(session, {key: (count, rate) for (key, rate), count in wanted.items()})
        scheduled, short = [], []
        used: defaultdict[str, int] = defaultdict(int)
        for claim, bucket in buckets:
            if bucket is None:
                scheduled.append(Scheduled(claim, 0.0))
                continue
            booking = bookings[bucket[0]]
            if used[booking.key] < booking.granted:
                scheduled.append(Scheduled(claim, booking.slot(used[booking.key]), booking.key))
                used[booking.key] += 1
            else:
                short.append((claim, booking.retry_in))
        for booking in bookings.values():
            if booking.wanted > booking.granted:
                PROVIDER_RATE_LIMITED.labels(_provider(booking.key)).inc(booking.wanted - booking.granted)
            if " " not in booking.key:  # Not per receiver host (unbounded labels).
                PROVIDER_TOKENS.labels(booking.key).set(booking.available - booking.granted)
        return scheduled, short

    def throttled(self, session: Session, pauses: Sequence[tuple[Provider, Claim, float]]) -> None:
        """Pause and slow down the buckets of the providers that answered "too many" (each for the
        longest pause it asked for)."""
        longest: dict[str, tuple[float, SendRate]] = {}
        for provider, claim, pause in pauses:
            if (bucket := self.bucket(provider, claim)) is not None:
                key, rate = bucket
                longest[key] = (max(pause, longest.get(key, (0.0, rate))[0]), rate)
        if not longest:
            return
        keys = sorted(longest)
        session.execute(_CREATE, {"keys": keys, "bursts": [longest[key][1].burst for key in keys]})
        session.execute(
            _THROTTLE,
            {
                "keys": keys,
                "pauses": [longest[key][0] for key in keys],
                "rates": [longest[key][1].per_second for key in keys],
                "bursts": [longest[key][1].burst for key in keys],
                "recovery": RECOVERY_SECONDS,
                "slowest": SLOWEST,
            },
        )
        for key in keys:
            log.warning("provider %s throttles: bucket paused %.1fs and slowed down", key, longest[key][0])

    def _book(self, session: Session, wanted: Mapping[str, tuple[int, SendRate]]) -> dict[str, Booking]:
        bookings = self._book_rows(session, wanted)
        if missing := {key: want for key, want in wanted.items() if key not in bookings}:
            keys = sorted(missing)
            session.execute(_CREATE, {"keys": keys, "bursts": [missing[key][1].burst for key in keys]})
            bookings.update(self._book_rows(session, missing))
        return bookings

    def _book_rows(self, session: Session, wanted: Mapping[str, tuple[int, SendRate]]) -> dict[str, Booking]:
        keys = sorted(wanted)
        rows = session.execute(
            _BOOK,
            {
                "keys": keys,
                "wants": [wanted[key][0] for key in keys],
                "rates": [wanted[key][1].per_second for key in keys],
                "bursts": [wanted[key][1].burst for key in keys],
                "max_wait": self._max_wait,
                "recovery": RECOVERY_SECONDS,
            },
        )
        return {row.key: Booking(**row._mapping, max_wait=self._max_wait) for row in rows}


NO_LIMITS = SendRates({}, max_wait_seconds=0)


def delete_idle_buckets(session: Session, *, idle_for_seconds: float) -> int:
    """Forget buckets nobody booked from, nor was throttled on, for `idle_for_seconds` (retention):
    one per receiver host ever sent to would otherwise pile up. Such a bucket has refilled (unless its
    burst takes longer than that to refill at its rate), so the full one created at its next use is
    the same."""
    result = session.execute(
        text(
            "DELETE FROM provider_send_buckets WHERE greatest(refilled_at, paused_until) "
            "< statement_timestamp() - make_interval(secs => :idle)"
        ),
        {"idle": idle_for_seconds},
    )
    return result.rowcount  # type: ignore[attr-defined]


def wait_for_slot(start: float, send: Scheduled) -> None:
    """Sleep until the send's token has come (its delay after `start`, a time.monotonic())."""
    if send.bucket is None:
        return
    PROVIDER_RATE_WAIT.labels(_provider(send.bucket)).observe(send.delay)
    if (left := start + send.delay - time.monotonic()) > 0:
        time.sleep(left)


def whole_seconds(seconds: float) -> int:
    """A wait as delayed delivery counts it: whole seconds, at least one."""
    return max(1, math.ceil(seconds))


def _provider(key: str) -> str:
    return key.split(" ", 1)[0]
