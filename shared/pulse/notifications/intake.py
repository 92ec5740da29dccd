"""Accepting the sends of concurrent requests together, in shared transactions (a group commit).

A request hands its send to the intake and waits; an intake thread takes every send waiting at that
moment and accepts them in one transaction — one statement per kind of row for the lot, as a batch
send does — then wakes each request with its own outcome. Under load, N requests cost one commit
instead of N, and no request holds a thread while it waits. Each request still answers only after
its notification is committed.

Outcomes stay per request: a refusal (invalid input, a rate limit) is that request's alone. Should
accepting a group fail in a way that is not one request's refusal, each of its sends is accepted
again in a transaction of its own, so one request can never fail another. A send with an
Idempotency-Key is always accepted on its own: its key is claimed in the same transaction as its
notification, and both must be undone together if it is refused.
"""

import asyncio
import logging
import queue
import threading
import uuid
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.errors import PulseError
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import Accepted, accept_notification, accept_notifications
from pulse.rate_limits.service import SendLimits
from pulse.timing.policy import TenantPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Send:
    """One request's send, with what its tenant's acceptance depends on."""

    tenant_id: uuid.UUID
    request: NotificationRequest
    policy: TenantPolicy
    rate: SendLimits
    idempotency_key: str | None = None
    outcome: Future[Accepted] = field(default_factory=Future, compare=False)


class Intake:
    """`threads` intake threads, each accepting up to `max_group` waiting sends per transaction."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        publish_grace: timedelta,
        threads: int = 4,
        max_group: int = 200,
    ) -> None:
        self._session_factory = session_factory
        self._publish_grace = publish_grace
        self._max_group = max_group
        self._waiting: queue.SimpleQueue[Send | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._accept_waiting, name=f"intake-{number}", daemon=True)
            for number in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def accept(self, send: Send) -> Accepted:
        """The accepted (committed) notification; raises the send's refusal, or what made the
        database fail (DBAPIError: nothing was accepted)."""
        self._waiting.put(send)
        return await asyncio.wrap_future(send.outcome)

    def close(self) -> None:
        """Accept what is waiting, then stop the threads."""
        for _ in self._threads:
            self._waiting.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept_waiting(self) -> None:
        while (first := self._waiting.get()) is not None:
            group = [first]
            while len(group) < self._max_group:
                try:
                    send = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if send is None:
                    self._waiting.put(None)  # Another thread's stop, or this one's after the group.
                    break
                group.append(send)
            # A request cancelled while its send waited (the server shutting down) is not accepted;
            # the others can no longer be cancelled, so their outcomes always reach them.
            group = [send for send in group if send.outcome.set_running_or_notify_cancel()]
            shared = [send for send in group if send.idempotency_key is None]
            if shared:
                self._accept_together(shared)
            for send in group:
                if send.idempotency_key is not None:
                    self._accept_alone(send)

    def _accept_together(self, sends: list[Send]) -> None:
        by_tenant: dict[uuid.UUID, list[Send]] = defaultdict(list)
        for send in sends:
            by_tenant[send.tenant_id].append(send)
        try:
            with transaction(self._session_factory) as session:
                outcomes = {
                    tenant_id: accept_notifications(
                        session,
                        tenant_id=tenant_id,
                        requests=[send.request for send in tenant_sends],
                        policy=tenant_sends[0].policy,
                        rate=tenant_sends[0].rate,
                        publish_grace=self._publish_grace,
                    )
                    # In one order in every transaction, so that two intake threads (or gateways)
                    # taking rate-limit counters of the same tenants cannot deadlock.
                    for tenant_id, tenant_sends in sorted(by_tenant.items())
                }
        except Exception as error:
            if _database_unreachable(error):
                for send in sends:  # Nothing was accepted; each request answers 503.
                    send.outcome.set_exception(error)
                return
            # Not one request's refusal (those are outcomes): find out whose failure it is.
            log.exception("accepting %d sends together failed; accepting each on its own", len(sends))
            for send in sends:
                self._accept_alone(send)
            return
        for tenant_id, tenant_sends in by_tenant.items():
            for send, outcome in zip(tenant_sends, outcomes[tenant_id], strict=True):
                if isinstance(outcome, PulseError):
                    send.outcome.set_exception(outcome)
                else:
                    send.outcome.set_result(outcome)

    def _accept_alone(self, send: Send) -> None:
        try:
            with transaction(self._session_factory) as session:
                accepted = accept_notification(
                    session,
                    tenant_id=send.tenant_id,
                    request=send.request,
                    idempotency_key=send.idempotency_key,
                    policy=send.policy,
                    rate=send.rate,
                    publish_grace=self._publish_grace,
                )
        except Exception as error:  # noqa: BLE001 - the request's own outcome, raised where it waits.
            send.outcome.set_exception(error)
        else:
            send.outcome.set_result(accepted)


def _database_unreachable(error: Exception) -> bool:
    return isinstance(error, PoolTimeoutError) or (
        isinstance(error, DBAPIError) and isinstance(error.orig, psycopg.OperationalError)
    )
