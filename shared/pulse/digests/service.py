"""Digests: the sends of one (tenant, user, channel, key) within a window, sent as one notification.

The open window lives in PostgreSQL (`digests`, at most one open row per key; its sends' variables in
`digest_events`), so it survives the restart of every process. Whatever touches an open digest locks
its row first: a send appends its event under the lock, and closing (by the scheduler once the window
has ended, or by the send that fills it or finds it over) renders the combined notification, queues it
and marks the digest closed in one transaction, under the same lock. A send that arrives while its
digest is being closed waits for the lock, finds the digest closed and opens the next window: no send
is lost or counted twice.

The combined notification exists from the first send on, with the digest's id: `scheduled`, with
`deferred_reason` `digest` and `scheduled_for` the window's end, and its content rendered from the
first send alone until the window closes. Then it is rendered with every send (`events`, oldest first,
and `count`) and planned like any send of its user at that moment: now, or when quiet hours end.
Only the first send of a window counts against the rate limit: it is the one that becomes a message.

Callers own the transaction (commit at the edge).
"""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.models import Digest, DigestEvent, IdempotencyRecord, Notification, Tenant
from pulse.digests.schemas import DigestedSend
from pulse.errors import Conflict, InvalidInput, PulseError
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.notifications.schemas import MAX_DIGEST_EVENTS, NotificationRequest
from pulse.notifications.send_time import DIGEST
from pulse.notifications.service import (
    Accepted,
    accept_notifications,
    claim_idempotency_key,
    resolve_notification,
)
from pulse.outbox.service import owe_publish
from pulse.rate_limits.service import SendLimits
from pulse.timing.policy import TenantPolicy
from pulse.vocabulary import Status

log = logging.getLogger(__name__)

# The variables of one digest's sends together, as JSON: what closing it loads and renders. A send
# that would go over starts the next window (one send's variables are at most 64 KiB).
MAX_EVENT_BYTES = 1024 * 1024
# A send finds its key's digest open, closed or opened concurrently: each round settles one of these.
_ROUNDS = 5


@dataclass(frozen=True)
class Digested:
    send: DigestedSend
    # True when an Idempotency-Key repeat returned the original answer.
    replayed: bool = False
    # The combined notification, when this send opened the window.
    opened: Accepted | None = None


def collect(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    request: NotificationRequest,
    policy: TenantPolicy,
    rate: SendLimits | None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Digested:
    """Add a send (with `digest`, `user_id` and `template`) to its key's open digest, opening one if
    there is none. Raises InvalidInput or RateLimited (the caller rolls back: nothing is written)."""
    assert request.digest is not None and request.user_id is not None
    now = now or datetime.now(UTC)
    candidate = uuid.uuid4()  # The new digest's id, if this send opens one.
    if idempotency_key is not None:
        original = claim_idempotency_key(
            session, tenant_id=tenant_id, key=idempotency_key, request=request, notification_id=candidate
        )
        if original is not None:
            return Digested(_answer(session.get_one(Digest, original)), replayed=True)
    size = len(to_json(request.variables))
    for _ in range(_ROUNDS):
        digest = _lock_open(session, tenant_id=tenant_id, request=request)
        if digest is not None and _takes_more(session, digest, size=size, now=now):
            _check_event(session, tenant_id=tenant_id, request=request, policy=policy, now=now)
            _append(session, digest, request.variables, size=size, now=now)
            if digest.event_count >= digest.max_events:
                close_digest(session, digest, policy=policy, now=now)
            digested = Digested(_answer(digest))
            break
        if digest is not None:
            close_digest(session, digest, policy=policy, now=now)
        opened = _open(
            session, tenant_id=tenant_id, request=request, id=candidate, policy=policy, rate=rate, now=now
        )
        if opened is not None:
            digested = opened
            break
    else:
        raise Conflict("the digest is being opened and closed concurrently; send again")
    if idempotency_key is not None and digested.send.digest_id != candidate:
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == idempotency_key)
            .values(notification_id=digested.send.digest_id)
        )
    return digested


def close_due_digests(
    session: Session, *, rules: AcceptanceSettings, batch_size: int, now: datetime | None = None
) -> int:
    """Close the digests whose window has ended (at most `batch_size`); return how many. Several
    schedulers may run: each locks its batch with SKIP LOCKED, and a digest locked by a send being
    added is left for the next round."""
    now = now or datetime.now(UTC)
    due = session.execute(
        select(Digest, Tenant)
        .join(Tenant, Tenant.id == Digest.tenant_id)
        .where(Digest.closed_at.is_(None), Digest.closes_at <= now)
        .order_by(Digest.closes_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True, of=Digest)
    ).all()
    for digest, tenant in due:
        try:
            with session.begin_nested():
                close_digest(session, digest, policy=rules.policy_of(tenant), now=now)
        except Exception:
            # A bug or a database error in this digest must not hold back the others forever.
            log.exception("closing digest %s of tenant %s failed", digest.id, digest.tenant_id)
            digest.closed_at = now
            _fail(session, digest.id, "internal error while closing the digest", now=now)
    return len(due)


def close_now(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID, policy: TenantPolicy) -> bool:
    """POST …/force on a combined notification whose window is open: close the window now and send
    what it collected, quiet hours or not. False when `id` is no such notification of the tenant."""
    digest = session.scalars(
        select(Digest)
        .join(Notification, Notification.id == Digest.id)
        .where(Digest.tenant_id == tenant_id, Digest.closed_at.is_(None), *_collecting(id))
        .with_for_update(of=Digest)
    ).one_or_none()
    if digest is None:
        return False
    close_digest(session, digest, policy=policy, now=datetime.now(UTC), respect_quiet_hours=False)
    return True


def close_digest(
    session: Session, digest: Digest, *, policy: TenantPolicy, now: datetime, respect_quiet_hours: bool = True
) -> None:
    """Render the locked digest's combined notification with all its events and queue it (or schedule
    it past quiet hours, unless told not to), and mark the digest closed. A combined notification
    cancelled meanwhile stays cancelled; one that cannot be rendered any more (template deleted or
    changed, user opted out) fails, with the reason."""
    digest.closed_at = now
    events = session.scalars(
        select(DigestEvent.variables).where(DigestEvent.digest_id == digest.id).order_by(DigestEvent.number)
    ).all()
    changes: dict[str, Any] = {"variables": _template_variables(events)}
    if not respect_quiet_hours:
        changes["respect_quiet_hours"] = False
    try:
        combined = NotificationRequest.model_validate(digest.request).model_copy(update=changes)
        values = resolve_notification(
            session, tenant_id=digest.tenant_id, request=combined, policy=policy, now=now
        )
    except (InvalidInput, ValidationError) as error:
        _fail(session, digest.id, f"the digest could not be rendered: {error}", now=now)
        return
    planned = {
        name: values[name]
        for name in (
            "content",
            "recipient",
            "priority",
            "status",
            "scheduled_for",
            "timezone",
            "deferred_reason",
            # An inapp digest's escalation counts from when the combined notification is due.
            "escalation",
            "escalate_at",
        )
    }
    released = session.execute(
        update(Notification)
        .where(*_collecting(digest.id))
        .values(**planned, updated_at=now)
        .returning(Notification.id, Notification.channel, Notification.priority, Notification.status)
    ).all()
    owe_publish(session, [row for row in released if row.status == Status.QUEUED])
    session.flush()


def _lock_open(session: Session, *, tenant_id: uuid.UUID, request: NotificationRequest) -> Digest | None:
    assert request.digest is not None
    return session.scalars(
        select(Digest)
        .where(
            Digest.tenant_id == tenant_id,
            Digest.user_id == request.user_id,
            Digest.channel == request.channel,
            Digest.key == request.digest.key,
            Digest.closed_at.is_(None),
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def _takes_more(session: Session, digest: Digest, *, size: int, now: datetime) -> bool:
    """The locked digest's window is open, has room for a send of `size` bytes, and its combined
    notification still waits for it (not cancelled)."""
    if now >= digest.closes_at or digest.event_bytes + size > MAX_EVENT_BYTES:
        return False
    return session.scalar(select(Notification.id).where(*_collecting(digest.id))) is not None


def _collecting(digest_id: uuid.UUID) -> Sequence[Any]:
    """Where the combined notification still waits for its window to close."""
    return (
        Notification.id == digest_id,
        Notification.status == Status.SCHEDULED,
        Notification.deferred_reason == DIGEST,
    )


def _check_event(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    request: NotificationRequest,
    policy: TenantPolicy,
    now: datetime,
) -> None:
    """A send refused now rather than when its digest closes: its template renders it as an event."""
    alone = request.model_copy(update={"variables": _template_variables([request.variables])})
    resolve_notification(session, tenant_id=tenant_id, request=alone, policy=policy, now=now)


def _append(session: Session, digest: Digest, variables: dict[str, Any], *, size: int, now: datetime) -> None:
    digest.event_count += 1
    digest.event_bytes += size
    session.add(
        DigestEvent(digest_id=digest.id, number=digest.event_count, variables=variables, created_at=now)
    )
    session.flush()


def _open(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    request: NotificationRequest,
    id: uuid.UUID,
    policy: TenantPolicy,
    rate: SendLimits | None,
    now: datetime,
) -> Digested | None:
    """Open a digest with this send as its first event and create its combined notification (counted
    against the rate limit); None when a concurrent send opened one first."""
    spec = request.digest
    assert spec is not None
    closes_at = now + timedelta(seconds=spec.window_seconds)
    size = len(to_json(request.variables))
    opened = session.scalar(
        pg_insert(Digest)
        .values(
            id=id,
            tenant_id=tenant_id,
            user_id=request.user_id,
            channel=request.channel,
            key=spec.key,
            request=request.model_dump(mode="json", exclude={"variables"}),
            max_events=spec.max_events or MAX_DIGEST_EVENTS,
            event_count=1,
            event_bytes=size,
            opened_at=now,
            closes_at=closes_at,
        )
        .on_conflict_do_nothing(
            index_elements=[Digest.tenant_id, Digest.user_id, Digest.channel, Digest.key],
            index_where=Digest.closed_at.is_(None),
        )
        .returning(Digest.id)
    )
    if opened is None:
        return None
    first = request.model_copy(
        update={"variables": _template_variables([request.variables]), "send_at": closes_at}
    )
    (accepted,) = accept_notifications(
        session, tenant_id=tenant_id, requests=[first], policy=policy, rate=rate, ids=[id]
    )
    if isinstance(accepted, PulseError):
        raise accepted
    session.execute(
        update(Notification)
        .where(Notification.id == id)
        .values(status=Status.SCHEDULED, scheduled_for=closes_at, deferred_reason=DIGEST)
    )
    session.add(DigestEvent(digest_id=id, number=1, variables=request.variables, created_at=now))
    session.flush()
    return Digested(_answer(session.get_one(Digest, id)), opened=accepted)


def _fail(session: Session, digest_id: uuid.UUID, reason: str, *, now: datetime) -> None:
    session.execute(
        update(Notification)
        .where(*_collecting(digest_id))
        .values(status=Status.FAILED, failed_at=now, updated_at=now, last_error=reason, deferred_reason=None)
    )


def _template_variables(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"events": list(events), "count": len(events)}


def _answer(digest: Digest) -> DigestedSend:
    return DigestedSend(
        digest_id=digest.id,
        key=digest.key,
        user_id=digest.user_id,
        channel=digest.channel,
        event_count=digest.event_count,
        closes_at=digest.closed_at or digest.closes_at,
    )
