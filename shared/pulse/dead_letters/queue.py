"""Keeping the broker's dead-letter queues in step with PostgreSQL.

`pulse.<channel>.dead` holds one message per failed notification. After a replay (or when failed
notifications are deleted) the queue holds copies that no longer stand for a failure; the prune
removes them and keeps one message per notification that is still failed.
"""

import json
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

import amqp
from kombu import Connection
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pulse.db.models import Notification
from pulse.messaging.depths import ready_messages
from pulse.messaging.publisher import ConfirmedPublisher, TaskMessage
from pulse.messaging.topology import DEAD_LETTER_EXCHANGE, dead_letter_queue, routing_key
from pulse.vocabulary import Channel, Priority, Status


def dead_letter(publisher: ConfirmedPublisher, notifications: Sequence[Any]) -> None:
    """Put each notification's task (rows with `id`, `channel` and `priority`) in its channel's
    dead-letter queue, as a worker's rejection does: for notifications that failed while no worker
    held their message. Returns once RabbitMQ confirmed every one."""
    publisher.publish(
        [
            TaskMessage(
                row.id,
                routing_key(Channel(row.channel), Priority(row.priority)),
                exchange=DEAD_LETTER_EXCHANGE.name,
            )
            for row in notifications
        ]
    )


def dead_letter_depth(connection: Connection, channel: Channel) -> int:
    amqp_channel = connection.channel()
    try:
        return ready_messages(amqp_channel, dead_letter_queue(channel).name)
    finally:
        amqp_channel.close()


def prune_dead_letters(
    connection: Connection,
    channel: Channel,
    still_failed: Callable[[Collection[uuid.UUID]], set[uuid.UUID]],
    *,
    limit: int,
) -> int:
    """One pass over at most `limit` messages from the head of the queue: acknowledge (drop) every
    message whose notification is no longer failed, or that repeats one already kept. Returns how
    many were dropped.

    Kept messages held unacknowledged return to the *head* of the queue when the channel closes, so
    a pass that saw only part of the queue moves them to its back instead (a confirmed copy, then the
    original acknowledged): the next pass sees the messages after them."""
    queue = dead_letter_queue(channel).name
    amqp_channel = connection.channel()
    try:
        depth = ready_messages(amqp_channel, queue)
        # Held unacknowledged until the channel closes, so one pass sees every message once.
        held = []
        for _ in range(min(depth, limit)):
            message = amqp_channel.basic_get(queue, no_ack=False)
            if message is None:
                break
            held.append((message, _notification_id(message.body)))
        rotate = len(held) < depth
        failed = still_failed({notification_id for _, notification_id in held if notification_id})
        kept: set[uuid.UUID] = set()
        dropped = 0
        for message, notification_id in held:
            # Not a Pulse message (notification_id None): not ours to judge, kept.
            if notification_id is None or (notification_id in failed and notification_id not in kept):
                if notification_id is not None:
                    kept.add(notification_id)
                if rotate:
                    # A crash between the two leaves a duplicate, which a later pass drops.
                    amqp_channel.basic_publish_confirm(
                        amqp.Message(message.body, **message.properties), exchange="", routing_key=queue
                    )
                    amqp_channel.basic_ack(message.delivery_tag)
                continue
            amqp_channel.basic_ack(message.delivery_tag)
            dropped += 1
        return dropped
    finally:
        amqp_channel.close()  # Unacknowledged messages go back to the queue.


def reconcile_dead_letter_queues(
    session: Session, connection: Connection, *, replayed_since: datetime, limit: int
) -> int:
    """Prune the queue of every channel with a replay since `replayed_since`, or with more messages
    than failed notifications (e.g. some were deleted), looking at no more than `limit` messages per
    queue. Other queues are left alone: a pass returns every message it keeps to the queue, which
    is not free."""
    failed_counts = dict(
        session.execute(
            select(Notification.channel, func.count())
            .where(Notification.status == Status.FAILED)
            .group_by(Notification.channel)
        ).all()
    )
    replayed = set(
        session.scalars(
            select(Notification.channel).distinct().where(Notification.replayed_at >= replayed_since)
        )
    )

    def still_failed(ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        return set(
            session.scalars(
                select(Notification.id).where(Notification.id.in_(ids), Notification.status == Status.FAILED)
            )
        )

    return sum(
        prune_dead_letters(connection, channel, still_failed, limit=limit)
        for channel in Channel
        if channel in replayed or dead_letter_depth(connection, channel) > failed_counts.get(channel, 0)
    )


def _notification_id(body: bytes | str) -> uuid.UUID | None:
    """The task argument of a Pulse message; None for anything else that was dead-lettered."""
    try:
        args, _kwargs, _embed = json.loads(body)
        return uuid.UUID(args[0])
    except (ValueError, TypeError, IndexError, KeyError):
        return None
