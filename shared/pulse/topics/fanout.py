"""Running fan-outs: each subscriber of the topic gets the notification a send with their `user_id`
would create, a chunk of subscribers per transaction. Callers own the transaction.

A fan-out's subscribers are split into parts, ranges of user ids (pulse.topics.service). A chunk is
the next `chunk_size` subscribers of one part, in user id order after the part's `last_user_id`,
accepted as a batch send is (`accept_notifications`: their profiles' addresses, opt-outs, time zones
and quiet hours, the rate limits), in the same transaction as the part's progress. A crash anywhere
loses the chunk and its progress together, so the next runner starts where the last commit left
off: no subscriber skipped, none sent twice (a unique (fanout_id, user_id) index guards that too).
Runners lock the part with SKIP LOCKED, so several runners (processes, scheduler replicas) work on
one fan-out's parts side by side, each part handled by one of them at a time, and memory holds one
chunk. A chunk holds its fan-out FOR SHARE: cancelling waits for the chunks under way to commit.

A subscriber a direct send would refuse (opted out, no address, over their rate limit) is skipped,
counted by reason. The tenant's quota is not a reason to skip: when it is spent, the part stops
before the first subscriber it refused and waits for the quota's window to end.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from pulse.db.models import Fanout, FanoutPart, Tenant, TopicSubscription
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
    """Create the notifications of the next chunk of one part of a running fan-out; return them (to
    publish after the commit), or None when no part is waiting. A part found to have no subscriber
    left is marked done (`finish_fanouts` then marks its fan-out done, after the commit)."""
    now = datetime.now(UTC)
    part = session.scalars(
        select(FanoutPart)
        .join(Fanout, Fanout.id == FanoutPart.fanout_id)
        .where(~FanoutPart.done, FanoutPart.resume_at <= now, Fanout.status == FanoutStatus.RUNNING)
        # The part waiting longest: the parts of running fan-outs take turns, a chunk each.
        .order_by(FanoutPart.resume_at)
        .limit(1)
        .with_for_update(skip_locked=True, of=FanoutPart)
    ).one_or_none()
    if part is None:
        return None
    # Shared with the other parts' chunks; cancelling (an update of the row) waits for them.
    claimed = session.execute(
        select(Fanout, Tenant)
        .join(Tenant, Tenant.id == Fanout.tenant_id)
        .where(Fanout.id == part.fanout_id)
        .with_for_update(read=True, of=Fanout)
    ).one()
    fanout, tenant = claimed
    part.updated_at = part.resume_at = now
    if fanout.status != FanoutStatus.RUNNING:  # Cancelled since the part was claimed.
        return []
    user_ids = _next_subscribers(session, fanout, part, chunk_size)
    if not user_ids:
        part.done = True
        return []
    try:
        # Validated once: the subscribers' user ids were validated when they subscribed.
        send = NotificationRequest.model_validate({**fanout.notification, "user_id": user_ids[0]})
    except ValidationError as error:  # The stored send no longer passes a rule of the schema.
        _record_progress(part, [(user_id, InvalidInput(str(error))) for user_id in user_ids], now=now)
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
    _record_progress(part, list(zip(user_ids, outcomes, strict=True)), now=now)
    return [outcome for outcome in outcomes if isinstance(outcome, Accepted)]


def finish_fanouts(session: Session) -> int:
    """Mark done the running fan-outs whose parts are all done; how many. Apart from the chunks: a
    chunk holds its fan-out FOR SHARE, and so may its other parts' chunks."""
    now = datetime.now(UTC)
    finished = session.execute(
        update(Fanout)
        .where(
            Fanout.status == FanoutStatus.RUNNING,
            ~exists().where(FanoutPart.fanout_id == Fanout.id, ~FanoutPart.done),
        )
        .values(status=FanoutStatus.DONE, updated_at=now, finished_at=now)
    )
    return int(finished.rowcount)  # type: ignore[attr-defined]


def _addressed_to(send: NotificationRequest, user_id: str) -> dict[str, str | None]:
    """The send as the subscriber's own: an inapp notification's recipient is its user id (validation
    filled it in with the first subscriber's); a topic send names no recipient on other channels."""
    return {"user_id": user_id, "recipient": user_id if send.channel is Channel.INAPP else None}


def _next_subscribers(session: Session, fanout: Fanout, part: FanoutPart, chunk_size: int) -> list[str]:
    query = select(TopicSubscription.user_id).where(
        TopicSubscription.tenant_id == fanout.tenant_id, TopicSubscription.topic == fanout.topic
    )
    if part.last_user_id is not None:
        query = query.where(TopicSubscription.user_id > part.last_user_id)
    elif part.first_user_id is not None:
        query = query.where(TopicSubscription.user_id >= part.first_user_id)
    if part.end_user_id is not None:
        query = query.where(TopicSubscription.user_id < part.end_user_id)
    return list(session.scalars(query.order_by(TopicSubscription.user_id).limit(chunk_size)))


def _record_progress(
    part: FanoutPart, outcomes: list[tuple[str, Accepted | PulseError]], *, now: datetime
) -> None:
    """Count the chunk on the part, up to the first subscriber the tenant's quota refused (none after
    it was accepted: the quota counts every send); the part resumes there when it resets."""
    handled = outcomes
    for position, (_, outcome) in enumerate(outcomes):
        if isinstance(outcome, QuotaExceeded):
            handled = outcomes[:position]
            part.resume_at = now + timedelta(seconds=outcome.reset_seconds)
            break
    if not handled:
        return
    reasons = Counter(_reason(outcome) for _, outcome in handled if isinstance(outcome, PulseError))
    part.created += len(handled) - reasons.total()
    part.skipped += reasons.total()
    part.skipped_reasons = dict(Counter(part.skipped_reasons) + reasons)
    part.last_user_id = handled[-1][0]


def _reason(refusal: PulseError) -> str:
    if isinstance(refusal, RateLimited):
        return "rate_limited"
    field = refusal.location[-1] if isinstance(refusal, InvalidInput) and refusal.location else None
    return _REASONS.get(str(field), "invalid")
