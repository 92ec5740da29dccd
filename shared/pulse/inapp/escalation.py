"""Escalating inapp notifications left unread: a scheduler job. Callers own the transaction.

An inapp send with `escalate` stores its plan (`escalation`) and when it falls due (`escalate_at`).
When it does, the job decides, once: read in time → nothing (`not_needed`); cancelled or failed →
`skipped`; otherwise the same content is accepted on the first of the plan's channels that the user
can be reached on, through the ordinary acceptance path (their recipient profile's address, opt-outs,
time zone and quiet hours), as a new notification with `escalated_from` set; when no channel can take
it, `skipped` with each channel's reason. The decision and the new notification are written in one
transaction, which also clears `escalate_at`: a crash before the commit leaves the escalation due, one
after it leaves it decided, so it happens exactly once. Several schedulers may run: each locks the
rows it takes with SKIP LOCKED.

Escalations are not rate-limited: the inapp send they continue was counted.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from pulse.db.models import Notification, Tenant
from pulse.errors import PulseError
from pulse.notifications.acceptance import AcceptanceSettings, screen
from pulse.notifications.schemas import EscalationStatus, NotificationRequest
from pulse.notifications.service import accept_notifications
from pulse.vocabulary import Channel, Status

log = logging.getLogger(__name__)

_MAX_SUBJECT = 78  # An email subject made from the body: one line, as RFC 5322 recommends.


def escalate_due(session: Session, *, rules: AcceptanceSettings, batch_size: int) -> int:
    """Decide the escalations that are due (at most `batch_size`); return how many sent a notification."""
    now = datetime.now(UTC)
    due = session.execute(
        select(Notification, Tenant)
        .join(Tenant, Tenant.id == Notification.tenant_id)
        .where(Notification.escalate_at <= now)
        .order_by(Notification.escalate_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True, of=Notification)
    ).all()
    escalated = 0
    for notification, tenant in due:
        decision = _decide(session, notification, tenant, rules=rules)
        assert notification.escalation is not None
        notification.escalation = {**notification.escalation, **decision, "decided_at": now.isoformat()}
        notification.escalate_at = None
        escalated += decision["status"] == EscalationStatus.ESCALATED
    return escalated


def _decide(
    session: Session, notification: Notification, tenant: Tenant, *, rules: AcceptanceSettings
) -> dict[str, Any]:
    if notification.status == Status.READ:
        return {"status": EscalationStatus.NOT_NEEDED, "reason": "read in time"}
    if notification.status in (Status.CANCELLED, Status.FAILED):
        return {"status": EscalationStatus.SKIPPED, "reason": f"the notification was {notification.status}"}
    assert notification.escalation is not None
    reasons: list[str] = []
    for channel in notification.escalation["channels"]:
        try:
            # A savepoint: whatever one channel's try wrote is undone if it raises.
            with session.begin_nested():
                outcome = _escalate_to(session, notification, tenant, Channel(channel), rules=rules)
        except DBAPIError:
            raise  # The database failed, not this escalation: the job tries again next tick.
        except Exception:
            log.exception("escalating notification %s to %s failed", notification.id, channel)
            outcome = "internal error; the scheduler's log has the details"
        if isinstance(outcome, uuid.UUID):
            return {
                "status": EscalationStatus.ESCALATED,
                "channel": channel,
                "notification_id": str(outcome),
                # Why the channels before it were passed over, if any were.
                "reason": "; ".join(reasons) or None,
            }
        reasons.append(f"{channel}: {outcome}")
    return {"status": EscalationStatus.SKIPPED, "reason": "; ".join(reasons)}


def _escalate_to(
    session: Session,
    notification: Notification,
    tenant: Tenant,
    channel: Channel,
    *,
    rules: AcceptanceSettings,
) -> uuid.UUID | str:
    """The new notification's id, or why `channel` cannot take it."""
    content = dict(notification.content)
    if channel is Channel.EMAIL and not content.get("subject"):
        content["subject"] = _subject_from(content["body"])
    try:
        request = NotificationRequest.model_validate(
            {
                "channel": channel,
                "user_id": notification.recipient,  # An inapp notification's recipient is its user.
                "content": content,
                "priority": notification.priority,
                "respect_quiet_hours": notification.respect_quiet_hours,
                "metadata": notification.meta,
                "callback_url": notification.callback_url,
            }
        )
        screen(request, rules)
    except ValidationError as error:
        return "; ".join(problem["msg"] for problem in error.errors())
    except PulseError as error:
        return str(error)
    new_id = uuid.uuid4()
    [result] = accept_notifications(
        session,
        tenant_id=tenant.id,
        requests=[request],
        policy=rules.policy_of(tenant),
        ids=[new_id],
        # The scheduler's outbox sweep publishes it, in the same tick.
        publish_grace=timedelta(0),
    )
    if isinstance(result, PulseError):
        return str(result)
    session.execute(
        update(Notification).where(Notification.id == new_id).values(escalated_from=notification.id)
    )
    return new_id


def _subject_from(body: str) -> str:
    """An email needs a subject; an inapp notification without one gets its body's first line."""
    line = body.strip().splitlines()[0] if body.strip() else "Notification"
    return line if len(line) <= _MAX_SUBJECT else line[: _MAX_SUBJECT - 1] + "…"
