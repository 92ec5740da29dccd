"""Circuit breakers per provider (per destination, for webhooks), and the chain of providers a
channel delivers through.

A breaker is closed (calls go through), open (calls are refused until a cooldown passes) or half-open
(one probe call decides: success closes it, failure opens it again). It opens after
`failure_threshold` consecutive transient failures, or when at least `failure_rate` of the last
`window` calls failed. Only transient failures count: a permanent one (a bad address) says nothing
about the provider's health.

A provider delivering to destinations the tenants choose (a DestinationProvider: webhook receivers)
has a breaker per destination (its `circuit_key`: the tenant and the receiver's host), so that one
receiver's failures hold back only what goes to it. The `destinations` most recently used breakers
are kept; a forgotten one starts closed again.
"""

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from typing import Any, Protocol, runtime_checkable

from pulse.delivery.providers import Claim, Provider
from pulse.errors import PermanentProviderError, ProviderThrottled, TransientProviderError
from pulse.observability.metrics import CIRCUIT_STATE, CIRCUITS_OPEN, PROVIDER_REQUEST

log = logging.getLogger(__name__)


class CircuitState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    failure_rate: float = 0.5
    window: int = 20
    cooldown_seconds: float = 30.0
    # Breakers kept per DestinationProvider (about 1 KiB each).
    destinations: int = 10_000


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[bool] = deque(maxlen=settings.window)  # True = failed
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._state = CircuitState.CLOSED

    @property
    def state(self) -> CircuitState:
        return self._state

    def current_state(self) -> CircuitState:
        """The state as callers meet it now: an open breaker whose cooldown is over lets the next
        call through (as its probe), so it counts as closed until that call says otherwise."""
        with self._lock:
            if (
                self._state is CircuitState.OPEN
                and self._clock() >= self._opened_at + self._settings.cooldown_seconds
            ):
                return CircuitState.CLOSED
            return self._state

    def wait_seconds(self) -> float:
        """0 when a call may go through now, else how long until the breaker lets a probe through."""
        with self._lock:
            if self._state is CircuitState.OPEN:
                return max(0.0, self._opened_at + self._settings.cooldown_seconds - self._clock())
            if self._state is CircuitState.HALF_OPEN and self._probing:
                return self._settings.cooldown_seconds
            return 0.0

    def allow(self) -> bool:
        """Whether a call may go now; in half-open, only one (the probe) until it reports back, which
        `settled` makes sure of."""
        with self._lock:
            if self._state is CircuitState.OPEN:
                if self._clock() < self._opened_at + self._settings.cooldown_seconds:
                    return False
                self._state = CircuitState.HALF_OPEN
            if self._state is CircuitState.HALF_OPEN:
                if self._probing:
                    return False
                self._probing = True
            return True

    @contextmanager
    def settled(self) -> Iterator[None]:
        """Around a call `allow()` let through: records its outcome however it ends, so that a probe
        always reports back. A PermanentProviderError is a success (the provider answered; the message
        was at fault), and so is ProviderThrottled (it answered; its send-rate bucket slows down);
        anything else raised, the unexpected included, is a failure."""
        try:
            yield
        except (PermanentProviderError, ProviderThrottled):
            self.record_success()
            raise
        except BaseException:
            self.record_failure()
            raise
        self.record_success()

    def record_success(self) -> None:
        with self._lock:
            self._probing = False
            self._consecutive_failures = 0
            self._recent.append(False)
            if self._state is not CircuitState.CLOSED:
                self._recent.clear()
                self._state = CircuitState.CLOSED

    def record_failure(self) -> None:
        with self._lock:
            self._probing = False
            self._consecutive_failures += 1
            self._recent.append(True)
            settings = self._settings
            rate_exceeded = len(self._recent) == settings.window and (
                sum(self._recent) / settings.window >= settings.failure_rate
            )
            if (
                self._state is CircuitState.HALF_OPEN
                or self._consecutive_failures >= settings.failure_threshold
                or rate_exceeded
            ):
                self._opened_at = self._clock()
                self._state = CircuitState.OPEN


class Breakers:
    """A provider's breakers by circuit key (a single one, key None, unless it is a
    DestinationProvider), the `capacity` most recently used kept. Exported per provider, computed
    when scraped from their current states (so a receiver nobody sends to any more does not stay
    open forever): `pulse_circuit_state` (the worst: open, else half-open, else closed) and
    `pulse_circuits_open` (how many are open)."""

    def __init__(
        self, provider: str, settings: BreakerSettings, *, capacity: int, clock: Callable[[], float]
    ) -> None:
        self._settings = settings
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: OrderedDict[str | None, CircuitBreaker] = OrderedDict()
        CIRCUIT_STATE.labels(provider).set_function(self.worst_state)
        CIRCUITS_OPEN.labels(provider).set_function(self.open_count)

    def get(self, key: str | None) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None:
                self._breakers.move_to_end(key)
                return breaker
            breaker = self._breakers[key] = CircuitBreaker(self._settings, clock=self._clock)
            if len(self._breakers) > self._capacity:
                self._breakers.popitem(last=False)
            return breaker

    def peek(self, key: str | None) -> CircuitBreaker | None:
        """The key's breaker if there is one (none: closed), without making it recently used."""
        with self._lock:
            return self._breakers.get(key)

    def worst_state(self) -> CircuitState:
        states = self._states()
        return next(
            (state for state in (CircuitState.OPEN, CircuitState.HALF_OPEN) if state in states),
            CircuitState.CLOSED,
        )

    def open_count(self) -> int:
        return self._states().count(CircuitState.OPEN)

    def _states(self) -> list[CircuitState]:
        with self._lock:
            breakers = list(self._breakers.values())
        return [breaker.current_state() for breaker in breakers]


@runtime_checkable
class DestinationProvider(Provider, Protocol):
    """A provider delivering to destinations the tenants choose (webhook receivers): each destination
    fails on its own, so each gets its own breaker."""

    def circuit_key(self, claim: Claim) -> str:
        """The claim's destination, as its breaker is known by (the tenant and the receiver's host)."""
        ...

    def prepare(self, claim: Claim) -> Callable[[], dict[str, Any] | None]:
        """Everything before the call that is ours to do (reading the tenant's secret, signing),
        done before a breaker is involved so that our failures neither count against the
        destination nor hold up its probe; returns the call itself."""
        ...


@dataclass(frozen=True)
class Sent:
    """Which provider took the message, and what it reported about it."""

    provider: str
    details: dict[str, Any]


class ProvidersUnavailable(TransientProviderError):
    """Every provider of the channel is refusing calls (their circuits are open)."""


class _Link:
    """One provider of a chain, with its breakers."""

    def __init__(self, provider: Provider, settings: BreakerSettings, clock: Callable[[], float]) -> None:
        self.provider = provider
        self._destinations = provider if isinstance(provider, DestinationProvider) else None
        capacity = 1 if self._destinations is None else settings.destinations
        self.breakers = Breakers(provider.name, settings, capacity=capacity, clock=clock)

    def circuit_key(self, claim: Claim) -> str | None:
        return None if self._destinations is None else self._destinations.circuit_key(claim)

    def prepare(self, claim: Claim) -> Callable[[], dict[str, Any] | None]:
        if self._destinations is None:
            return partial(self.provider.send, claim)
        return self._destinations.prepare(claim)

    def wait_seconds(self, claim: Claim | None) -> float:
        if claim is None and self._destinations is not None:
            return 0.0  # Which breaker is not known yet.
        breaker = self.breakers.peek(None if claim is None else self.circuit_key(claim))
        return 0.0 if breaker is None else breaker.wait_seconds()


class ProviderChain:
    """A channel's providers in order of preference, each behind its breaker(s). A transient failure
    or an open circuit moves on to the next provider within the same attempt."""

    def __init__(
        self,
        providers: Sequence[Provider],
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._links = [_Link(provider, settings, clock) for provider in providers]

    @property
    def names(self) -> list[str]:
        return [link.provider.name for link in self._links]

    def wait_seconds(self, claim: Claim | None = None) -> int:
        """0 if some provider would take `claim` now; else whole seconds until one might. Without a
        claim, per-destination breakers (whose destination is not known yet) count as closed."""
        wait = min(link.wait_seconds(claim) for link in self._links)
        return 0 if wait <= 0 else max(1, math.ceil(wait))

    def named(self, name: str) -> Provider:
        return next(link.provider for link in self._links if link.provider.name == name)

    def first_choice(self, claim: Claim) -> Provider | None:
        """The provider a send of `claim` goes to first now: the first whose breaker lets it through."""
        return next((link.provider for link in self._links if link.wait_seconds(claim) <= 0), None)

    def send(self, claim: Claim) -> Sent:
        """Deliver through the first provider that takes it; returns its name and what it reported.
        A provider that throttles ends the attempt (ProviderThrottled): the answer to "too many" is
        to slow down, not to move the load onto the next account."""
        failure: TransientProviderError | None = None
        for link in self._links:
            name = link.provider.name
            try:
                send = link.prepare(claim)
                breaker = link.breakers.get(link.circuit_key(claim))
                if not breaker.allow():
                    continue
                started = time.perf_counter()
                try:
                    with breaker.settled():
                        details = send()
                finally:
                    PROVIDER_REQUEST.labels(claim.channel, name).observe(time.perf_counter() - started)
            except (PermanentProviderError, ProviderThrottled) as error:
                error.provider = name
                raise
            except TransientProviderError as error:
                error.provider = name
                failure = error
                continue
            except Exception as error:  # Unforeseen: retried like a transient failure, and logged in full.
                log.exception(
                    "unexpected error from %s",
                    name,
                    extra={"notification_id": str(claim.notification_id), "provider": name},
                )
                failure = TransientProviderError(f"{name} failed unexpectedly: {error!r}")
                failure.provider = name
                continue
            return Sent(name, details or {})
        if failure is not None:
            raise failure
        raise ProvidersUnavailable(f"every provider's circuit is open ({', '.join(self.names)})")
