"""Fault injection shared by every sandbox endpoint (SMTP and Twilio now; FCM and webhooks later)."""

import random
import threading
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

Endpoint = Literal["smtp", "twilio", "fcm", "webhook"]


class Fault(BaseModel):
    """How one endpoint misbehaves until the fault is replaced or cleared.

    ``latency_ms`` delays every answer of the endpoint. A message fails if it is one of the
    next ``fail_next`` messages, otherwise with probability ``rate``. ``status`` is the
    failure's status code: HTTP endpoints answer it as is; SMTP answers it to DATA, so
    4xx is a transient and 5xx a permanent failure (an HTTP-style 503 is permanent for SMTP).
    ``account``, when set, limits the fault to requests for that provider account (the Twilio
    account SID, the FCM project id, or the SMTP listener: ``primary`` or ``secondary``), so that
    one account can fail while another works.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: Endpoint
    status: int = Field(default=503, ge=400, le=599, description="Status code of injected failures.")
    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability that a message fails.")
    latency_ms: int = Field(default=0, ge=0, le=600_000, description="Delay added to every answer.")
    fail_next: int = Field(default=0, ge=0, description="Number of upcoming messages that fail for sure.")
    account: str | None = Field(
        default=None, description="Only requests for this account (Twilio SID, FCM project, SMTP listener)."
    )


class Decision(NamedTuple):
    delay_seconds: float
    status: int | None  # None: accept the message


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
            fault = self._faults.get(endpoint)
            if fault is None or (fault.account is not None and fault.account != account):
                return _ACCEPT
            if fault.fail_next:
                self._faults[endpoint] = fault.model_copy(update={"fail_next": fault.fail_next - 1})
                fails = True
            else:
                fails = random.random() < fault.rate
        return Decision(fault.latency_ms / 1000, fault.status if fails else None)
