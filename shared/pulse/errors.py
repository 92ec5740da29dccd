"""The domain's error vocabulary, mapped once to HTTP problems (gateway) and to retry or
dead-letter decisions (workers)."""


class PulseError(Exception):
    """Base of every error Pulse raises on purpose."""


class NotFound(PulseError):
    pass


class Conflict(PulseError):
    pass


class InvalidInput(PulseError):
    """Input that passed the schema but not a rule of the domain; `location` names the field."""

    def __init__(self, message: str, *, location: tuple[str | int, ...] | None = None) -> None:
        super().__init__(message)
        self.location = location


class Unauthorized(PulseError):
    pass


class Forbidden(PulseError):
    pass


class ProviderError(PulseError):
    """A provider refused or failed a delivery."""

    # Which provider it was, when a chain of them was tried.
    provider: str | None = None


class TransientProviderError(ProviderError):
    """Worth trying again later: timeouts, 4xx SMTP replies, 5xx HTTP answers."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds the provider asked us to wait (HTTP Retry-After), if it said.
        self.retry_after = retry_after


class ProviderThrottled(TransientProviderError):
    """The provider said "too many, slow down" (HTTP 429, SMTP 421): its account is busy, the message
    is fine. The notification goes back without using an attempt, and the provider's send-rate bucket
    slows down (pulse.delivery.rates)."""


class PermanentProviderError(ProviderError):
    """Trying again cannot help: bad address, rejected content, revoked token."""


class RateLimited(PulseError):
    """Too many sends to one user (or recipient) on one channel in the current window."""

    def __init__(self, message: str, *, limit: int, reset_seconds: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.reset_seconds = reset_seconds


class QuotaExceeded(RateLimited):
    """The tenant's sends per minute, every recipient together, are spent (a fan-out waits for them)."""
