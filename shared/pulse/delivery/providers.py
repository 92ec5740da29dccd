"""What a provider is given (a claimed notification) and what it must do (send it, or raise)."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pulse.vocabulary import Channel, Priority


@dataclass(frozen=True)
class Claim:
    notification_id: uuid.UUID
    tenant_id: uuid.UUID
    channel: Channel
    priority: Priority
    recipient: str
    content: dict[str, Any]
    attempt_number: int
    # Attempts left in this notification's budget after this one.
    attempts_left: int
    created_at: datetime
    # What a status callback reports besides the attempt's outcome (pulse.callbacks).
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Where this notification's status events are POSTed, if anywhere.
    callback_url: str | None = None
    # Set when this notification is itself a status callback: the notification it reports on.
    callback_for: uuid.UUID | None = None


class Provider(Protocol):
    """Something that delivers a claimed notification, raising a ProviderError when it cannot.

    `send` returns what is worth keeping with the attempt (a message id, an SMS's segment count), or
    None when there is nothing."""

    name: str

    def send(self, claim: Claim) -> dict[str, Any] | None: ...


@runtime_checkable
class DestinationHost(Protocol):
    """A provider whose sends go to hosts the tenants choose (webhook receivers)."""

    name: str

    def destination(self, claim: Claim) -> str:
        """The `host:port` the claim is delivered to."""
        ...
