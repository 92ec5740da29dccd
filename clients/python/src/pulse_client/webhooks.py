"""Verifying what Pulse POSTs to you (webhook deliveries, status callbacks), signed per Standard Webhooks."""

from collections.abc import Mapping
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify_webhook"]


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> Any:
    """The decoded event, once `webhook-signature` proves it was signed with `secret` (the tenant's
    `whsec_…`, from `webhook_secret.get()`) and `webhook-timestamp` is within five minutes. Pass the
    raw body, before any parsing. Raises `WebhookVerificationError` otherwise. Retries of one event
    carry the same `webhook-id`: use it to drop repeats."""
    return Webhook(secret).verify(body, dict(headers))
