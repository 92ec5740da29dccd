"""Retry plans: how many attempts a notification gets, and how long it waits between them."""

import random
from collections.abc import Callable

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulse.vocabulary import Priority

# Celery's native delayed delivery counts whole seconds, and a delay of 0 is not a delay.
MIN_DELAY_SECONDS = 1


class RetryPlan(BaseModel):
    attempts: int = Field(ge=1, description="Attempts in all, the first one included.")
    base_seconds: float = Field(gt=0, description="Backoff before the second attempt (doubles each time).")
    cap_seconds: float = Field(gt=0, description="The longest backoff.")

    def delay_seconds(
        self,
        attempts_made: int,
        *,
        retry_after: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> int:
        """Exponential backoff with full jitter; a provider's Retry-After wins when it gave one."""
        if retry_after is not None:
            return max(MIN_DELAY_SECONDS, round(retry_after))
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** (attempts_made - 1))
        return max(MIN_DELAY_SECONDS, round(rng() * ceiling))


class RetrySettings(BaseSettings):
    """One plan per priority, e.g. `PULSE_RETRY_NORMAL_ATTEMPTS=6`, `PULSE_RETRY_NORMAL_CAP_SECONDS=60`."""

    model_config = SettingsConfigDict(env_prefix="PULSE_RETRY_", env_file=".env", extra="ignore")

    critical_attempts: int = Field(6, ge=1, description="Attempts for critical notifications.")
    critical_base_seconds: float = Field(1, gt=0, description="First backoff of critical notifications.")
    critical_cap_seconds: float = Field(60, gt=0, description="Longest backoff of critical notifications.")
    high_attempts: int = Field(5, ge=1, description="Attempts for high-priority notifications.")
    high_base_seconds: float = Field(2, gt=0, description="First backoff of high-priority notifications.")
    high_cap_seconds: float = Field(300, gt=0, description="Longest backoff of high-priority notifications.")
    normal_attempts: int = Field(4, ge=1, description="Attempts for normal notifications.")
    normal_base_seconds: float = Field(5, gt=0, description="First backoff of normal notifications.")
    normal_cap_seconds: float = Field(900, gt=0, description="Longest backoff of normal notifications.")
    low_attempts: int = Field(3, ge=1, description="Attempts for low-priority notifications.")
    low_base_seconds: float = Field(10, gt=0, description="First backoff of low-priority notifications.")
    low_cap_seconds: float = Field(1800, gt=0, description="Longest backoff of low-priority notifications.")

    def plan_for(self, priority: Priority) -> RetryPlan:
        return RetryPlan(
            attempts=getattr(self, f"{priority}_attempts"),
            base_seconds=getattr(self, f"{priority}_base_seconds"),
            cap_seconds=getattr(self, f"{priority}_cap_seconds"),
        )
