"""Fault injection shared by every sandbox endpoint (SMTP, Twilio, FCM and the webhook receiver)."""

import random
import threading
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

Endpoint = Literal["smtp", "twilio", "fcm", "webhook"]
# How a webhook receiver's answers can misbehave (see Fault.answer).
Misbehaviour = Literal["drip", "bad-gzip", "gzip-bomb", "huge"]


class Fault(BaseModel):
    """How one endpoint misbehaves until the fault is replaced or cleared.

    ``latency_ms`` delays every answer of the endpoint. A message fails if it is one of the
    next ``fail_next`` messages, otherwise with probability ``rate``. ``status`` is the
    failure's status code: HTTP endpoints answer it as is; SMTP answers it to DATA, so
    4xx is a transient and 5xx a permanent failure (an HTTP-style 503 is permanent for SMTP).
    A 429 is throttling: HTTP endpoints answer it with `Retry-After: <retry_after>`, SMTP with its
    nearest equivalent, `421 4.7.0 … rate limit exceeded, too many messages, try again later`.
    ``account``, when set, limits the fault to requests for that provider account (the Twilio
    account SID, the FCM project id, the SMTP listener: ``primary`` or ``secondary``, or the
    webhook receiver's path after ``/webhooks/``), so that one account can fail while another works.
    ``answer`` (webhook receiver only) makes every answer misbehave, accepted or failed alike.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: Endpoint
    status: int = Field(default=503, ge=400, le=599, description="Status code of injected failures.")
    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability that a message fails.")
    latency_ms: int = Field(default=0, ge=0, le=600_000, description="Delay added to every answer.")
    fail_next: int = Field(default=0, ge=0, description="Number of upcoming messages that fail for sure.")
    retry_after: int | None = Field(
        default=None, ge=0, le=3600, description="Retry-After (seconds) of HTTP 429 answers; 1 when unset."
    )
    account: str | None = Field(
        default=None,
        description="Only requests for this account (Twilio SID, FCM project, SMTP listener, webhook path).",
    )
    answer: Misbehaviour | None = Field(
        default=None,
        description="Webhook receiver only: every answer's body is dripped a byte every 0.2 s for 20 s "
        "(`drip`), labelled gzip but not gzip (`bad-gzip`), gzip inflating to 32 MiB (`gzip-bomb`), "
        "or 16 MiB long (`huge`).",
    )


class Decision(NamedTuple):
    delay_seconds: float
    status: int | None  # None: accept the message
    retry_after: int = 1  # Seconds, for a throttling answer.


_ACCEPT = Decision(0.0, None)


class FaultInjector:
    """Thread-safe registry of at most one active fault per endpoint."""

    def __init__(self) -> None:
        self._faults: dict[Endpoint, Fault] = {}
        self._lock = threading.Lock()

    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults[fault.endpoint] = fault

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults.values())

    def clear(self) -> int:
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
            return cleared

    def decide(self, endpoint: Endpoint, *, account: str | None = None) -> Decision:
        """Decide the fate of one incoming message; consumes one of ``fail_next`` if any is left."""
        with self._lock:
            fault = self._applicable(endpoint, account)
            if fault is None:
                return _ACCEPT
            if fault.fail_next:
                self._faults[endpoint] = fault.model_copy(update={"fail_next": fault.fail_next - 1})
                fails = True
            else:
                fails = random.random() < fault.rate
        retry_after = 1 if fault.retry_after is None else fault.retry_after
        return Decision(fault.latency_ms / 1000, fault.status if fails else None, retry_after)

    def misbehaviour(self, endpoint: Endpoint, *, account: str | None = None) -> Misbehaviour | None:
        """How the endpoint's answers misbehave, if they do (Fault.answer)."""
        with self._lock:
            fault = self._applicable(endpoint, account)
        return None if fault is None else fault.answer

    def _applicable(self, endpoint: Endpoint, account: str | None) -> Fault | None:
        fault = self._faults.get(endpoint)
        if fault is None or (fault.account is not None and fault.account != account):
            return None
        return fault
