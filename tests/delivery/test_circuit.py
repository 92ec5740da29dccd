"""Circuit breakers and the provider chain, with providers that stand in for external services."""

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from pulse.delivery.circuit import (
    BreakerSettings,
    CircuitBreaker,
    CircuitState,
    DestinationProvider,
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
    breaker = CircuitBreaker(SETTINGS, clock=clock)
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
    breaker = CircuitBreaker(SETTINGS, clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()

    breaker.record_failure()

    assert breaker.state is CircuitState.OPEN
    assert breaker.wait_seconds() == 30


def test_a_breaker_opens_when_half_of_the_recent_calls_failed() -> None:
    breaker = CircuitBreaker(SETTINGS, clock=Clock())
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


def test_a_probe_that_fails_unexpectedly_still_reports_back() -> None:
    # A receiver's garbage once raised an error nobody expected during the probe: the breaker kept
    # waiting for the probe's outcome, and refused every call until a restart.
    clock = Clock()
    provider = ScriptedProvider("webhook", *[TransientProviderError("503")] * 3, ValueError("garbage"))
    chain = ProviderChain([provider], SETTINGS, clock=clock)
    for _ in range(3):
        with pytest.raises(TransientProviderError):
            chain.send(CLAIM)
    clock.now += 30

    with pytest.raises(TransientProviderError, match=r"webhook failed unexpectedly: ValueError\('garbage'\)"):
        chain.send(CLAIM)

    assert chain.wait_seconds() == 30  # The failed probe opened it again, for a cooldown only.
    clock.now += 30
    assert chain.send(CLAIM) == Sent("webhook", {})


def test_an_unexpected_error_fails_over_like_a_transient_one() -> None:
    primary = ScriptedProvider("primary", KeyError("bug"))
    secondary = ScriptedProvider("secondary")
    chain = ProviderChain([primary, secondary], SETTINGS)

    assert chain.send(CLAIM) == Sent("secondary", {})


class Receivers:
    """Stands in for webhook receivers: a destination per (tenant, URL host); `down` hosts fail;
    `database_down` fails before the call."""

    name = "hooks"

    def __init__(self, *down: str) -> None:
        self.down = set(down)
        self.database_down = False
        self.calls: list[str] = []

    def circuit_key(self, claim: Claim) -> str:
        return f"{claim.tenant_id} {urlsplit(claim.recipient).hostname}"

    def prepare(self, claim: Claim) -> Callable[[], dict[str, Any] | None]:
        if self.database_down:
            raise OperationalError("SELECT webhook_secret FROM tenants", {}, ConnectionRefusedError())
        return partial(self.send, claim)

    def send(self, claim: Claim) -> dict[str, Any] | None:
        self.calls.append(claim.recipient)
        if urlsplit(claim.recipient).hostname in self.down:
            raise TransientProviderError("503")
        return None


def _to(recipient: str, tenant_id: uuid.UUID = CLAIM.tenant_id) -> Claim:
    return dataclasses.replace(CLAIM, channel=Channel.WEBHOOK, recipient=recipient, tenant_id=tenant_id)


def _open(chain: ProviderChain, claim: Claim) -> None:
    for _ in range(SETTINGS.failure_threshold):
        with pytest.raises(TransientProviderError):
            chain.send(claim)


def test_each_tenant_and_receiver_host_has_its_own_breaker() -> None:
    receivers = Receivers("down.example")
    assert isinstance(receivers, DestinationProvider)
    chain = ProviderChain([receivers], SETTINGS)
    broken = _to("https://down.example/orders")
    _open(chain, broken)

    assert chain.wait_seconds(broken) == 30
    assert chain.wait_seconds(_to("https://down.example/invoices")) == 30  # the same receiver host
    with pytest.raises(ProvidersUnavailable):
        chain.send(_to("https://down.example/invoices"))
    # Every other destination goes through: another host of the tenant, the same host of another tenant.
    assert chain.wait_seconds(_to("https://up.example/orders")) == 0
    assert chain.send(_to("https://up.example/orders")) == Sent("hooks", {})
    assert chain.wait_seconds(_to("https://down.example/orders", uuid.uuid4())) == 0
    # Before claiming, the destination is not known: one tenant's receiver holds nothing up.
    assert chain.wait_seconds() == 0


def test_a_failure_of_ours_before_the_call_leaves_the_probe_free() -> None:
    # Reading the tenant's secret from PostgreSQL failed during a probe: the database error escaped
    # and the probe never reported back.
    clock = Clock()
    receivers = Receivers("down.example")
    chain = ProviderChain([receivers], SETTINGS, clock=clock)
    claim = _to("https://down.example/orders")
    _open(chain, claim)
    clock.now += 30
    receivers.database_down = True

    with pytest.raises(TransientProviderError, match="hooks failed unexpectedly: OperationalError"):
        chain.send(claim)

    assert chain.wait_seconds(claim) == 0  # The probe is still to be made...
    receivers.database_down = False
    receivers.down.clear()
    assert chain.send(claim) == Sent("hooks", {})  # ...and it closes the breaker.
    assert chain.wait_seconds(claim) == 0
    assert receivers.calls.count("https://down.example/orders") == SETTINGS.failure_threshold + 1


def test_only_the_most_recently_used_destinations_are_remembered() -> None:
    receivers = Receivers("a.example", "b.example", "c.example")
    chain = ProviderChain([receivers], dataclasses.replace(SETTINGS, destinations=2))
    _open(chain, _to("https://a.example/x"))
    _open(chain, _to("https://b.example/x"))
    assert chain.wait_seconds(_to("https://a.example/x")) == 30

    _open(chain, _to("https://c.example/x"))

    assert chain.wait_seconds(_to("https://a.example/x")) == 0  # forgotten: closed again
    assert (
        chain.wait_seconds(_to("https://b.example/x")) == chain.wait_seconds(_to("https://c.example/x")) == 30
    )


def test_the_metrics_give_a_providers_worst_state_and_its_open_circuits() -> None:
    clock = Clock()
    receivers = Receivers("a.example", "b.example")
    receivers.name = f"hooks-{uuid.uuid4().hex[:8]}"
    chain = ProviderChain([receivers], SETTINGS, clock=clock)

    def sample(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"provider": receivers.name})

    chain.send(_to("https://up.example/x"))
    assert (sample("pulse_circuit_state"), sample("pulse_circuits_open")) == (CircuitState.CLOSED, 0)
    _open(chain, _to("https://a.example/x"))
    _open(chain, _to("https://b.example/x"))
    assert (sample("pulse_circuit_state"), sample("pulse_circuits_open")) == (CircuitState.OPEN, 2)
    # Once their cooldown is over they hold nothing back: receivers nobody sends to do not stay open.
    clock.now += 30
    assert (sample("pulse_circuit_state"), sample("pulse_circuits_open")) == (CircuitState.CLOSED, 0)
    with pytest.raises(TransientProviderError):
        chain.send(_to("https://a.example/x"))  # the probe fails
    assert (sample("pulse_circuit_state"), sample("pulse_circuits_open")) == (CircuitState.OPEN, 1)
