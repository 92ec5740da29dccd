"""Circuit breakers and the provider chain, with providers that stand in for external services."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pulse.delivery.circuit import (
    BreakerSettings,
    CircuitBreaker,
    CircuitState,
    ProviderChain,
    ProvidersUnavailable,
    Sent,
)
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, TransientProviderError
from pulse.vocabulary import Channel, Priority

SETTINGS = BreakerSettings(failure_threshold=3, failure_rate=0.5, window=10, cooldown_seconds=30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedProvider:
    """Answers each send with the next outcome of its script (None = accepted); reports `details`."""

    def __init__(self, name: str, *outcomes: Exception | None, details: dict[str, Any] | None = None) -> None:
        self.name = name
        self._outcomes = list(outcomes)
        self._details = details
        self.sent = 0

    def send(self, claim: Claim) -> dict[str, Any] | None:
        self.sent += 1
        outcome = self._outcomes.pop(0) if self._outcomes else None
        if outcome is not None:
            raise outcome
        return self._details


CLAIM = Claim(
    notification_id=uuid.uuid4(),
    tenant_id=uuid.uuid4(),
    channel=Channel.EMAIL,
    priority=Priority.NORMAL,
    recipient="ada@example.com",
    content={"subject": "s", "body": "b"},
    attempt_number=1,
    attempts_left=3,
    created_at=datetime.now(UTC),
)


def test_a_breaker_opens_after_consecutive_failures_and_closes_after_a_good_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("smtp", SETTINGS, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED

    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.wait_seconds() == 30

    clock.now += 30
    assert breaker.allow()  # The probe...
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # ...and only one.
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()


def test_a_failed_probe_opens_the_breaker_again_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("smtp", SETTINGS, clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()

    breaker.record_failure()

    assert breaker.state is CircuitState.OPEN
    assert breaker.wait_seconds() == 30


def test_a_breaker_opens_when_half_of_the_recent_calls_failed() -> None:
    breaker = CircuitBreaker("smtp", SETTINGS, clock=Clock())
    for _ in range(5):  # Alternating: never 3 failures in a row.
        breaker.record_success()
        breaker.record_failure()

    assert breaker.state is CircuitState.OPEN


def test_a_transient_failure_fails_over_to_the_secondary_within_the_same_attempt() -> None:
    primary = ScriptedProvider("primary", TransientProviderError("503"), details={"by": "primary"})
    secondary = ScriptedProvider("secondary", details={"by": "secondary"})
    chain = ProviderChain([primary, secondary], SETTINGS)

    assert chain.send(CLAIM) == Sent("secondary", {"by": "secondary"})
    assert (primary.sent, secondary.sent) == (1, 1)


def test_a_provider_reporting_nothing_gives_empty_details() -> None:
    chain = ProviderChain([ScriptedProvider("only")], SETTINGS)

    assert chain.send(CLAIM) == Sent("only", {})


def test_a_permanent_failure_does_not_fail_over() -> None:
    primary = ScriptedProvider("primary", PermanentProviderError("bad address"))
    secondary = ScriptedProvider("secondary")
    chain = ProviderChain([primary, secondary], SETTINGS)

    with pytest.raises(PermanentProviderError) as raised:
        chain.send(CLAIM)

    assert raised.value.provider == "primary"
    assert secondary.sent == 0


def test_an_open_primary_is_skipped_and_all_open_means_wait() -> None:
    primary = ScriptedProvider("primary", *[TransientProviderError("down")] * 3)
    secondary = ScriptedProvider("secondary", *[TransientProviderError("down")] * 3)
    chain = ProviderChain([primary, secondary], SETTINGS)
    for _ in range(3):
        with pytest.raises(TransientProviderError):
            chain.send(CLAIM)
    assert chain.wait_seconds() == 30

    with pytest.raises(ProvidersUnavailable):
        chain.send(CLAIM)
    assert (primary.sent, secondary.sent) == (3, 3)
