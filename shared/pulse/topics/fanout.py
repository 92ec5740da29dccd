"""Running fan-outs: each subscriber of the topic gets the notification a send with their `user_id`
would create, a chunk of subscribers per transaction. Callers own the transaction.

A chunk is the next `chunk_size` subscribers in user id order after the fan-out's `last_user_id`,
accepted as a batch send is (`accept_notifications`: their profiles' addresses, opt-outs, time zones
and quiet hours, the rate limits), in the same transaction as the fan-out row's progress. A crash
anywhere loses the chunk and its progress together, so the next runner starts where the last commit
left off: no subscriber skipped, none sent twice (a unique (fanout_id, user_id) index guards that
too). Runners lock the fan-out row with SKIP LOCKED, so several schedulers share the running
fan-outs, each chunk of one fan-out handled by one of them at a time, and memory holds one chunk.

A subscriber a direct send would refuse (opted out, no address, over their rate limit) is skipped,
counted by reason. The tenant's quota is not a reason to skip: when it is spent, the fan-out stops
before the first subscriber it refused and waits for the quota's window to end.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulse.db.models import Fanout, Tenant, TopicSubscription
from pulse.errors import InvalidInput, PulseError, QuotaExceeded, RateLimited
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import Accepted, accept_notifications
from pulse.topics.schemas import FanoutStatus
from pulse.vocabulary import Channel

# Where a direct send's refusal points, as a fan-out's reason to skip the subscriber.
_REASONS = {"user_id": "opted_out", "recipient": "no_address"}


def run_fanout_chunk(
    session: Session, *, rules: AcceptanceSettings, chunk_size: int, publish_grace: timedelta
) -> list[Accepted] | None:
    """Create the notifications of the next chunk of one running fan-out; return them (to publish
    after the commit), or None when no fan-out is waiting."""
    now = datetime.now(UTC)
    claimed = session.execute(
        select(Fanout, Tenant)
        .join(Tenant, Tenant.id == Fanout.tenant_id)
        .where(Fanout.status == FanoutStatus.RUNNING, Fanout.resume_at <= now)
        # The fan-out waiting longest: several running fan-outs take turns, a chunk each.
        .order_by(Fanout.resume_at)
        .limit(1)
        .with_for_update(skip_locked=True, of=Fanout)
    ).one_or_none()
    if claimed is None:
        return None
    fanout, tenant = claimed
    user_ids = _next_subscribers(session, fanout, chunk_size)
    fanout.updated_at = fanout.resume_at = now
    if not user_ids:
        fanout.status = FanoutStatus.DONE
        fanout.finished_at = now
        return []
    try:
        # Validated once: the subscribers' user ids were validated when they subscribed.
        send = NotificationRequest.model_validate({**fanout.notification, "user_id": user_ids[0]})
    except ValidationError as error:  # The stored send no longer passes a rule of the schema.
        _record_progress(fanout, [(user_id, InvalidInput(str(error))) for user_id in user_ids], now=now)
        return []
    outcomes = accept_notifications(
        session,
        tenant_id=fanout.tenant_id,
        requests=[send.model_copy(update=_addressed_to(send, user_id)) for user_id in user_ids],
        policy=rules.policy_of(tenant),
        rate=rules.limits_of(tenant),
        fanout_id=fanout.id,
        publish_grace=publish_grace,
    )
    _record_progress(fanout, list(zip(user_ids, outcomes, strict=True)), now=now)
    return [outcome for outcome in outcomes if isinstance(outcome, Accepted)]


def _addressed_to(send: NotificationRequest, user_id: str) -> dict[str, str | None]:
    """The send as the subscriber's own: an inapp notification's recipient is its user id (validation
    filled it in with the first subscriber's); a topic send names no recipient on other channels."""
    return {"user_id": user_id, "recipient": user_id if send.channel is Channel.INAPP else None}


def _next_subscribers(session: Session, fanout: Fanout, chunk_size: int) -> list[str]:
    query = select(TopicSubscription.user_id).where(
        TopicSubscription.tenant_id == fanout.tenant_id, TopicSubscription.topic == fanout.topic
    )
    if fanout.last_user_id is not None:
        query = query.where(TopicSubscription.user_id > fanout.last_user_id)
    return list(session.scalars(query.order_by(TopicSubscription.user_id).limit(chunk_size)))


def _record_progress(
    fanout: Fanout, outcomes: list[tuple[str, Accepted | PulseError]], *, now: datetime
) -> None:
    """Count the chunk on the fan-out, up to the first subscriber the tenant's quota refused (none
    after it was accepted: the quota counts every send); the fan-out resumes there when it resets."""
    handled = outcomes
    for position, (_, outcome) in enumerate(outcomes):
        if isinstance(outcome, QuotaExceeded):
            handled = outcomes[:position]
            fanout.resume_at = now + timedelta(seconds=outcome.reset_seconds)
            break
    if not handled:
        return
    reasons = Counter(_reason(outcome) for _, outcome in handled if isinstance(outcome, PulseError))
    fanout.created += len(handled) - reasons.total()
    fanout.skipped += reasons.total()
    fanout.skipped_reasons = dict(Counter(fanout.skipped_reasons) + reasons)
    fanout.last_user_id = handled[-1][0]


def _reason(refusal: PulseError) -> str:
    if isinstance(refusal, RateLimited):
        return "rate_limited"
    field = refusal.location[-1] if isinstance(refusal, InvalidInput) and refusal.location else None
    return _REASONS.get(str(field), "invalid")
