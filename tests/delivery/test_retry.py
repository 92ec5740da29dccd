"""Retry plans: exponential backoff with full jitter, Retry-After, and per-priority budgets."""

from pathlib import Path

import pytest

from pulse.delivery.retry import MIN_DELAY_SECONDS, RetryPlan, RetrySettings
from pulse.vocabulary import Priority

PLAN = RetryPlan(attempts=5, base_seconds=5, cap_seconds=60)


def _most(attempts_made: int, plan: RetryPlan = PLAN) -> int:
    return plan.delay_seconds(attempts_made, rng=lambda: 1.0)


def _least(attempts_made: int, plan: RetryPlan = PLAN) -> int:
    return plan.delay_seconds(attempts_made, rng=lambda: 0.0)


@pytest.mark.parametrize(("attempts_made", "ceiling"), [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (12, 60)])
def test_the_longest_backoff_doubles_from_the_base_up_to_the_cap(attempts_made: int, ceiling: int) -> None:
    assert _most(attempts_made) == ceiling


@pytest.mark.parametrize("attempts_made", [1, 2, 5, 12])
def test_the_shortest_backoff_is_the_one_second_minimum(attempts_made: int) -> None:
    assert MIN_DELAY_SECONDS == 1
    assert _least(attempts_made) == 1


def test_the_jitter_scales_the_ceiling_and_rounds_to_whole_seconds() -> None:
    assert PLAN.delay_seconds(3, rng=lambda: 0.5) == 10  # 0.5 x 20
    assert PLAN.delay_seconds(3, rng=lambda: 0.34) == 7  # 6.8 rounded
    assert PLAN.delay_seconds(1, rng=lambda: 0.01) == 1  # 0.05 rounds to 0: the minimum wins


def test_fractional_bases_are_rounded() -> None:
    plan = RetryPlan(attempts=3, base_seconds=1.3, cap_seconds=100)
    assert [_most(n, plan) for n in (1, 2, 3)] == [round(1.3), round(2.6), round(5.2)]


def test_the_cap_bounds_every_delay() -> None:
    plan = RetryPlan(attempts=30, base_seconds=2, cap_seconds=45)
    values = [plan.delay_seconds(n, rng=lambda: 0.999) for n in range(1, 30)]
    assert max(values) == 45
    assert all(1 <= value <= 45 for value in values)


def test_random_delays_stay_within_the_full_jitter_bounds() -> None:
    for attempts_made in range(1, 8):
        ceiling = min(PLAN.cap_seconds, PLAN.base_seconds * 2 ** (attempts_made - 1))
        for _ in range(50):
            assert 1 <= PLAN.delay_seconds(attempts_made) <= round(ceiling)


def test_a_retry_after_overrides_the_backoff() -> None:
    assert PLAN.delay_seconds(1, retry_after=30, rng=lambda: 0.0) == 30
    assert PLAN.delay_seconds(5, retry_after=7.4, rng=lambda: 1.0) == 7
    assert PLAN.delay_seconds(1, retry_after=0, rng=lambda: 1.0) == 1  # Still a delay.


def test_the_default_budgets_per_priority(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # No .env of the checkout.
    for priority in Priority:
        monkeypatch.delenv(f"PULSE_RETRY_{priority.upper()}_ATTEMPTS", raising=False)
    settings = RetrySettings()

    assert {priority: settings.plan_for(priority).attempts for priority in Priority} == {
        Priority.CRITICAL: 6,
        Priority.HIGH: 5,
        Priority.NORMAL: 4,
        Priority.LOW: 3,
    }


def test_the_environment_overrides_a_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PULSE_RETRY_NORMAL_ATTEMPTS", "7")
    monkeypatch.setenv("PULSE_RETRY_NORMAL_CAP_SECONDS", "30")
    monkeypatch.delenv("PULSE_RETRY_LOW_ATTEMPTS", raising=False)
    settings = RetrySettings()

    assert settings.plan_for(Priority.NORMAL).attempts == 7
    assert settings.plan_for(Priority.NORMAL).cap_seconds == 30
    assert settings.plan_for(Priority.LOW).attempts == 3


def test_an_invalid_budget_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PULSE_RETRY_HIGH_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="high_attempts"):
        RetrySettings()
