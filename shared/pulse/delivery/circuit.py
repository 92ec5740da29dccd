"""Circuit breakers per provider, and the chain of providers a channel delivers through.

A breaker is closed (calls go through), open (calls are refused until a cooldown passes) or half-open
(one probe call decides: success closes it, failure opens it again). It opens after
`failure_threshold` consecutive transient failures, or when at least `failure_rate` of the last
`window` calls failed. Only transient failures count: a permanent one (a bad address) says nothing
about the provider's health.
"""

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pulse.delivery.providers import Claim, Provider
from pulse.errors import PermanentProviderError, TransientProviderError
from pulse.observability.metrics import CIRCUIT_STATE, PROVIDER_REQUEST


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


class CircuitBreaker:
    def __init__(
        self, provider: str, settings: BreakerSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.provider = provider
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[bool] = deque(maxlen=settings.window)  # True = failed
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._set(CircuitState.CLOSED)

    @property
    def state(self) -> CircuitState:
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
        """Whether a call may go now; in half-open, only one (the probe) until it reports back."""
        with self._lock:
            if self._state is CircuitState.OPEN:
                if self._clock() < self._opened_at + self._settings.cooldown_seconds:
                    return False
                self._set(CircuitState.HALF_OPEN)
            if self._state is CircuitState.HALF_OPEN:
                if self._probing:
                    return False
                self._probing = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._probing = False
            self._consecutive_failures = 0
            self._recent.append(False)
            if self._state is not CircuitState.CLOSED:
                self._recent.clear()
                self._set(CircuitState.CLOSED)

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
                self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        self._state = state
        CIRCUIT_STATE.labels(self.provider).set(int(state))


@dataclass(frozen=True)
class Sent:
    """Which provider took the message, and what it reported about it."""

    provider: str
    details: dict[str, Any]


class ProvidersUnavailable(TransientProviderError):
    """Every provider of the channel is refusing calls (their circuits are open)."""


class ProviderChain:
    """A channel's providers in order of preference, each behind its breaker. A transient failure or
    an open circuit moves on to the next provider within the same attempt."""

    def __init__(self, providers: Sequence[Provider], settings: BreakerSettings) -> None:
        self._links = [(provider, CircuitBreaker(provider.name, settings)) for provider in providers]

    @property
    def names(self) -> list[str]:
        return [provider.name for provider, _ in self._links]

    def wait_seconds(self) -> int:
        """0 if some provider would take a call now; else whole seconds until one might."""
        wait = min(breaker.wait_seconds() for _, breaker in self._links)
        return 0 if wait <= 0 else max(1, math.ceil(wait))

    def send(self, claim: Claim) -> Sent:
        """Deliver through the first provider that takes it; returns its name and what it reported."""
        failure: TransientProviderError | None = None
        for provider, breaker in self._links:
            if not breaker.allow():
                continue
            started = time.perf_counter()
            try:
                details = provider.send(claim)
            except PermanentProviderError as error:
                breaker.record_success()  # It answered: the provider is healthy, the message is not.
                error.provider = provider.name
                raise
            except TransientProviderError as error:
                breaker.record_failure()
                error.provider = provider.name
                failure = error
                continue
            finally:
                PROVIDER_REQUEST.labels(claim.channel, provider.name).observe(time.perf_counter() - started)
            breaker.record_success()
            return Sent(provider.name, details or {})
        if failure is not None:
            raise failure
        raise ProvidersUnavailable(f"every provider's circuit is open ({', '.join(self.names)})")
