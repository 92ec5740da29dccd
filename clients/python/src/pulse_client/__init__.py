"""Typed client for the Pulse notification API: `Pulse` (blocking) and `AsyncPulse` (asyncio)."""

from pulse_client import models
from pulse_client._client import AsyncPulse, Pulse
from pulse_client._core import RetryPolicy
from pulse_client.errors import (
    AuthenticationError,
    ConflictError,
    FieldError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PulseError,
    RateLimitError,
    ServiceUnavailableError,
)
from pulse_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "AsyncPulse",
    "AuthenticationError",
    "ConflictError",
    "FieldError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Pulse",
    "PulseError",
    "RateLimitError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "WebhookVerificationError",
    "models",
    "verify_webhook",
]
