"""Topic subscriptions and the fan-out rows of topic sends. Callers own the transaction."""

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.types import Text

from pulse.db.models import Fanout, FanoutPart, TopicSubscription
from pulse.errors import Conflict, InvalidInput, NotFound
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import check_template
from pulse.topics.schemas import FanoutStatus

# One statement whatever the number of users; ids already subscribed are left as they are.
# A fan-out's parts: several runners (processes, scheduler replicas) create one fan-out's notifications
# side by side, a part each. Up to MAX_PARTS (four replicas of two runners), none smaller than
# SUBSCRIBERS_PER_PART: one runner creates that many in a few seconds.
MAX_PARTS = 8
SUBSCRIBERS_PER_PART = 5000
# The first user id of every part but the first: the topic's ids in order, every `size`th one.
_PART_BOUNDARIES = text(
    """
    SELECT user_id FROM (
        SELECT user_id, row_number() OVER (ORDER BY user_id) AS position
        FROM topic_subscriptions WHERE tenant_id = :tenant_id AND topic = :topic
    ) AS ranked
    WHERE position > 1 AND position % :size = 1
    ORDER BY user_id
    """
)

_SUBSCRIBE = text(
    """
    INSERT INTO topic_subscriptions (tenant_id, topic, user_id)
    SELECT :tenant_id, :topic, user_id FROM unnest(:user_ids) AS user_id
    ON CONFLICT DO NOTHING
    """
).bindparams(bindparam("user_ids", type_=ARRAY(Text)))


def subscribe(session: Session, *, tenant_id: uuid.UUID, topic: str, user_ids: Sequence[str]) -> int:
    """Subscribe the users (idempotent); how many were not subscribed yet."""
    added = session.execute(_SUBSCRIBE, {"tenant_id": tenant_id, "topic": topic, "user_ids": list(user_ids)})
    return int(added.rowcount)  # type: ignore[attr-defined]


def unsubscribe(session: Session, *, tenant_id: uuid.UUID, topic: str, user_ids: Sequence[str]) -> int:
    """Unsubscribe the users; how many were subscribed."""
    removed = session.execute(
        delete(TopicSubscription).where(
            TopicSubscription.tenant_id == tenant_id,
            TopicSubscription.topic == topic,
            TopicSubscription.user_id.in_(set(user_ids)),
        )
    )
    return int(removed.rowcount)  # type: ignore[attr-defined]


def count_subscribers(session: Session, *, tenant_id: uuid.UUID, topic: str) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                TopicSubscription.tenant_id == tenant_id, TopicSubscription.topic == topic
            )
        )
        or 0
    )


def get_topic_size(session: Session, *, tenant_id: uuid.UUID, topic: str) -> int:
    """The topic's subscribers; NotFound when it has none (a topic exists while it has subscribers)."""
    subscribers = count_subscribers(session, tenant_id=tenant_id, topic=topic)
    if not subscribers:
        raise NotFound(f"topic {topic!r} has no subscribers")
    return subscribers


def list_subscribers(
    session: Session, *, tenant_id: uuid.UUID, topic: str, limit: int, cursor: str | None
) -> tuple[list[TopicSubscription], str | None]:
    """In user id order, keyset-paginated on the user id (the cursor is the last one, encoded)."""
    query = select(TopicSubscription).where(
        TopicSubscription.tenant_id == tenant_id, TopicSubscription.topic == topic
    )
    if cursor is not None:
        query = query.where(TopicSubscription.user_id > _decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(TopicSubscription.user_id).limit(limit + 1)))
    if not rows and cursor is None:
        raise NotFound(f"topic {topic!r} has no subscribers")
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, base64.urlsafe_b64encode(rows[-1].user_id.encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        user_id = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, binascii.Error, UnicodeError):
        user_id = "\x00"
    if "\x00" in user_id:  # Never in a user id; PostgreSQL text cannot hold it.
        raise InvalidInput("cursor is not one this API returned", location=("query", "cursor"))
    return user_id


def start_fanout(session: Session, *, tenant_id: uuid.UUID, request: NotificationRequest) -> Fanout:
    """The fan-out of a send with `topic`, to be run by the scheduler; NotFound for a topic without
    subscribers, InvalidInput for a template the send cannot use."""
    assert request.topic is not None
    check_template(session, tenant_id=tenant_id, request=request)  # Else every subscriber is skipped.
    recipients = get_topic_size(session, tenant_id=tenant_id, topic=request.topic)
    now = datetime.now(UTC)
    fanout = Fanout(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        topic=request.topic,
        notification=request.model_dump(mode="json", exclude={"topic"}),
        status=FanoutStatus.RUNNING,
        recipients=recipients,
        created_at=now,
        updated_at=now,
        finished_at=None,
    )
    firsts = [None, *_part_boundaries(session, tenant_id=tenant_id, topic=request.topic, size=recipients)]
    ends = [*firsts[1:], None]
    fanout.parts = [
        FanoutPart(
            part=index,
            first_user_id=first,
            end_user_id=end,
            last_user_id=None,
            done=False,
            created=0,
            skipped=0,
            skipped_reasons={},
            resume_at=now,
            updated_at=now,
        )
        for index, (first, end) in enumerate(zip(firsts, ends, strict=True))
    ]
    session.add(fanout)
    session.flush()
    return fanout


def _part_boundaries(session: Session, *, tenant_id: uuid.UUID, topic: str, size: int) -> list[str]:
    """Where the parts of a fan-out to `size` subscribers start, but the first."""
    parts = min(MAX_PARTS, size // SUBSCRIBERS_PER_PART)
    if parts <= 1:
        return []
    boundaries = session.scalars(
        _PART_BOUNDARIES, {"tenant_id": tenant_id, "topic": topic, "size": -(-size // parts)}
    )
    return list(boundaries)


def get_fanout(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Fanout:
    fanout = session.scalars(
        select(Fanout)
        .where(Fanout.id == id, Fanout.tenant_id == tenant_id)
        .options(selectinload(Fanout.parts))
    ).one_or_none()
    if fanout is None:
        raise NotFound(f"fan-out {id} not found")
    return fanout


def cancel_fanout(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Fanout:
    """Stop a running fan-out: no more notifications are created for it (those created stay, and are
    sent). Waits for a chunk being created to commit. Cancelling a cancelled one changes nothing."""
    now = datetime.now(UTC)
    session.execute(
        update(Fanout)
        .where(Fanout.id == id, Fanout.tenant_id == tenant_id, Fanout.status == FanoutStatus.RUNNING)
        .values(status=FanoutStatus.CANCELLED, updated_at=now, finished_at=now)
    )
    fanout = get_fanout(session, tenant_id=tenant_id, id=id)
    if fanout.status == FanoutStatus.DONE:
        raise Conflict(f"fan-out {id} is done; there is nothing left to cancel")
    return fanout
