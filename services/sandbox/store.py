"""Thread-safe in-memory store of every message the sandbox endpoints accept."""

import threading
import uuid
from collections import Counter, OrderedDict, defaultdict
from datetime import UTC, datetime
from itertools import islice
from typing import TypedDict


class Message(TypedDict):
    id: str
    channel: str
    recipient: str
    subject: str
    body: str
    html: str | None
    headers: dict[str, str]
    received_at: str
    provider: str
    # Later sends of the same message (same idempotency identity) that were absorbed into this one.
    repeats: int


def new_message(
    *,
    channel: str,
    provider: str,
    recipient: str,
    subject: str,
    body: str,
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> Message:
    return Message(
        id=str(uuid.uuid4()),
        channel=channel,
        recipient=recipient,
        subject=subject,
        body=body,
        html=html,
        headers=headers if headers is not None else {},
        received_at=datetime.now(UTC).isoformat(),
        provider=provider,
        repeats=0,
    )


class MessageStore:
    """Keeps the newest ``max_messages`` messages, oldest evicted first.

    Like the real receivers it stands in for (mailbox providers collapse a repeated Message-ID,
    webhook consumers a repeated webhook-id), it keeps one copy per idempotency identity and counts
    the repeats, on the message and in total.

    Counts per channel and recipient are maintained incrementally so that the count
    endpoint benchmarks poll stays O(1) however full the store is.
    """

    def __init__(self, max_messages: int) -> None:
        self._max_messages = max_messages
        self._messages: OrderedDict[str, Message] = OrderedDict()
        # channel -> recipient -> count; None as either key means "any".
        self._counts: defaultdict[str | None, Counter[str | None]] = defaultdict(Counter)
        self._by_identity: dict[str, Message] = {}
        self._identity_of: dict[str, str] = {}  # message id -> identity, to forget evicted ones
        self.repeats = 0
        self._lock = threading.Lock()

    def add(self, message: Message, *, identity: str | None = None) -> None:
        """Store the message, unless one with the same `identity` is stored: then count a repeat."""
        with self._lock:
            if identity is not None:
                if (original := self._by_identity.get(identity)) is not None:
                    original["repeats"] += 1
                    self.repeats += 1
                    return
                self._by_identity[identity] = message
                self._identity_of[message["id"]] = identity
            self._messages[message["id"]] = message
            for channel in (None, message["channel"]):
                self._counts[channel].update((None, message["recipient"]))
            if len(self._messages) > self._max_messages:
                _, evicted = self._messages.popitem(last=False)
                self._forget_counts(evicted)
                if (evicted_identity := self._identity_of.pop(evicted["id"], None)) is not None:
                    del self._by_identity[evicted_identity]

    def _forget_counts(self, message: Message) -> None:
        for channel in (None, message["channel"]):
            per_recipient = self._counts[channel]
            for recipient in (None, message["recipient"]):
                per_recipient[recipient] -= 1
                if not per_recipient[recipient]:  # don't keep a zero entry per past recipient
                    del per_recipient[recipient]
            if not per_recipient:
                del self._counts[channel]

    def get(self, message_id: str) -> Message | None:
        with self._lock:
            return self._messages.get(message_id)

    def count(self, channel: str | None = None, recipient: str | None = None) -> int:
        with self._lock:
            per_recipient = self._counts.get(channel)
            return per_recipient[recipient] if per_recipient else 0

    def by_channel(self) -> dict[str, int]:
        with self._lock:
            return {channel: counts[None] for channel, counts in self._counts.items() if channel is not None}

    def search(
        self,
        *,
        channel: str | None = None,
        recipient: str | None = None,
        q: str | None = None,
        limit: int,
    ) -> tuple[list[Message], int]:
        """Return up to ``limit`` matches newest first, and the number of matches before the limit.

        ``recipient`` matches exactly; ``q`` is a case-insensitive substring of subject or body.
        """
        if channel is None and recipient is None and q is None:
            with self._lock:
                return list(islice(reversed(self._messages.values()), limit)), len(self._messages)
        # Filtering may scan everything: do it on a snapshot so SMTP writers are not blocked meanwhile.
        with self._lock:
            snapshot = list(self._messages.values())
        needle = q.casefold() if q else None
        found = [
            m
            for m in reversed(snapshot)
            if (channel is None or m["channel"] == channel)
            and (recipient is None or m["recipient"] == recipient)
            and (needle is None or needle in m["subject"].casefold() or needle in m["body"].casefold())
        ]
        return found[:limit], len(found)

    def clear(self) -> int:
        with self._lock:
            deleted = len(self._messages)
            self._messages.clear()
            self._counts.clear()
            self._by_identity.clear()
            self._identity_of.clear()
            self.repeats = 0
            return deleted
