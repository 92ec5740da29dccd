"""The relational schema. Alembic migrations (pulse/db/migrations) create it; this module only maps it."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
        dict[str, Any]: JSONB,
    }


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Defaults for this tenant's recipients; NULL quiet hours means the deployment's PULSE_QUIET_HOURS.
    timezone: Mapped[str] = mapped_column(String(64), server_default=text("'UTC'"))
    quiet_hours: Mapped[str | None] = mapped_column(String(32))
    # Standard Webhooks signing secret (`whsec_<base64>`), created on first use.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    # The secret a rotation replaced, and when: deliveries are signed with both during the grace period.
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_rotated_at: Mapped[datetime | None]
    # Priority of sends that name none (and whose template names none); NULL means `normal`.
    default_priority: Mapped[str | None] = mapped_column(String(16))
    # Sends per (user or recipient, channel) per window; NULL means the deployment's default.
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    rate_limit_window_seconds: Mapped[int | None] = mapped_column(Integer)
    # Sends per minute, every channel together; NULL means the deployment's default, 0 none.
    sends_per_minute: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the whole key: keys are 256-bit random, so a slow password hash would add nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Rows stay after revocation, for the audit log.
    revoked_at: Mapped[datetime | None]
    name: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None]
    # Refreshed at most once a minute (pulse.tenants.service.find_principal).
    last_used_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One change to a tenant's configuration: who (an API key's id, or `cli`), what, when, and a
    small diff without secrets (pulse.audit)."""

    __tablename__ = "audit_log"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(128))
    changes: Mapped[dict[str, Any] | None]

    __table_args__ = (
        Index("ix_audit_log_tenant_created", "tenant_id", text("created_at DESC"), text("id DESC")),
        Index("ix_audit_log_tenant_object", "tenant_id", "object_type", "object_id", text("created_at DESC")),
    )


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    content: Mapped[dict[str, Any]]
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=text("'{}'::jsonb"))
    callback_url: Mapped[str | None] = mapped_column(Text)
    # The template the content was rendered from (the rendered content is what was sent).
    template: Mapped[str | None] = mapped_column(String(100))
    # Set on a status callback: the notification whose status change it reports.
    callback_for: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("notifications.id", ondelete="SET NULL")
    )
    respect_quiet_hours: Mapped[bool] = mapped_column(server_default=text("true"))
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL"), index=True
    )
    # The topic send (fan-out) that created it, if any.
    fanout_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("fanouts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    scheduled_for: Mapped[datetime | None]
    timezone: Mapped[str | None] = mapped_column(String(64))
    deferred_reason: Mapped[str | None] = mapped_column(String(32))
    delivered_at: Mapped[datetime | None]
    read_at: Mapped[datetime | None]
    attempt_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Attempts made before the last dead-letter replay: a replay grants a fresh budget, keeps history.
    attempts_before_replay: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    replay_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    replayed_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    # A worker owns a `sending` row until this instant; after it, the row may be claimed again.
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # An inapp send's escalation plan and, once decided, its outcome (pulse.inapp.escalation);
    # `escalate_at` is when it is due, NULL once decided.
    escalation: Mapped[dict[str, Any] | None]
    escalate_at: Mapped[datetime | None]
    # Set on an escalation: the unread inapp notification it escalates.
    escalated_from: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("notifications.id", ondelete="SET NULL")
    )

    attempts: Mapped[list["DeliveryAttempt"]] = relationship(
        order_by="DeliveryAttempt.number", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_notifications_tenant_created", "tenant_id", text("created_at DESC"), text("id DESC")),
        Index("ix_notifications_tenant_status_created", "tenant_id", "status", text("created_at DESC")),
        Index("ix_notifications_tenant_channel_created", "tenant_id", "channel", text("created_at DESC")),
        Index(
            "ix_notifications_tenant_user_created",
            "tenant_id",
            "user_id",
            text("created_at DESC"),
            postgresql_where=text("user_id IS NOT NULL"),
        ),
        Index(
            "ix_notifications_due",
            "scheduled_for",
            postgresql_where=text("status = 'scheduled'"),
        ),
        Index(
            "ix_notifications_retry_due",
            "next_attempt_at",
            postgresql_where=text("status = 'retrying'"),
        ),
        Index(
            "ix_notifications_failed",
            "tenant_id",
            "channel",
            text("failed_at DESC"),
            postgresql_where=text("status = 'failed'"),
        ),
        Index(
            "ix_notifications_replayed",
            "channel",
            "replayed_at",
            postgresql_where=text("replayed_at IS NOT NULL"),
        ),
        Index(
            "ix_notifications_finished_updated",
            "updated_at",
            postgresql_where=text("status IN ('delivered', 'failed', 'cancelled', 'read')"),
        ),
        Index(
            "ix_notifications_tenant_finished_updated",
            "tenant_id",
            "updated_at",
            postgresql_where=text("status IN ('delivered', 'failed', 'cancelled', 'read')"),
        ),
        Index(
            "ix_notifications_callback_for",
            "callback_for",
            postgresql_where=text("callback_for IS NOT NULL"),
        ),
        Index(
            "ix_notifications_queued_updated",
            "updated_at",
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_notifications_claim_expiry",
            "claimed_until",
            postgresql_where=text("status = 'sending'"),
        ),
        Index(
            "ix_notifications_inbox",
            "tenant_id",
            "recipient",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("channel = 'inapp' AND status IN ('delivered', 'read')"),
        ),
        Index(
            "ix_notifications_inbox_unread",
            "tenant_id",
            "recipient",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("channel = 'inapp' AND status = 'delivered'"),
        ),
        Index(
            "ix_notifications_escalation_due",
            "escalate_at",
            postgresql_where=text("escalate_at IS NOT NULL"),
        ),
        Index(
            "ix_notifications_escalated_from",
            "escalated_from",
            postgresql_where=text("escalated_from IS NOT NULL"),
        ),
        Index(
            "uq_notifications_fanout_user",
            "fanout_id",
            "user_id",
            unique=True,
            postgresql_where=text("fanout_id IS NOT NULL"),
        ),
    )


class Schedule(Base):
    """A recurring send: every time `cron` fires (in `timezone`), `notification` is sent."""

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64))
    # The body of POST /v1/notifications, as accepted.
    notification: Mapped[dict[str, Any]]
    paused: Mapped[bool] = mapped_column(server_default=text("false"))
    # Why it is paused (`requested`, `failures`); NULL while it runs.
    paused_reason: Mapped[str | None] = mapped_column(String(16))
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]
    run_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Failed runs since the last successful one (or resume); enough of them pause the schedule.
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Why its latest failed or skipped run did not send, and when that was.
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_schedules_due", "next_run_at", postgresql_where=text("NOT paused")),)


class TopicSubscription(Base):
    """An end user subscribed to one of the tenant's topics; a topic exists while it has subscribers."""

    __tablename__ = "topic_subscriptions"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Fanout(Base):
    """A send to every subscriber of a topic, created in chunks by the scheduler's runners: its
    subscribers' user ids are split into parts (FanoutPart), which runners work on side by side."""

    __tablename__ = "fanouts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(128))
    # The body of POST /v1/notifications without `topic`: each subscriber's send adds its user_id.
    notification: Mapped[dict[str, Any]]
    # `running`, `done` or `cancelled`.
    status: Mapped[str] = mapped_column(String(16))
    # Subscribers when the send was accepted.
    recipients: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # When the status changed last (each part has its own, for its progress).
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    parts: Mapped[list["FanoutPart"]] = relationship(
        order_by="FanoutPart.part", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (Index("ix_fanouts_running", "created_at", postgresql_where=text("status = 'running'")),)

    # The progress of the whole, summed over the parts.
    @property
    def created(self) -> int:
        return sum(part.created for part in self.parts)

    @property
    def skipped(self) -> int:
        return sum(part.skipped for part in self.parts)

    @property
    def skipped_reasons(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for part in self.parts:
            for reason, count in part.skipped_reasons.items():
                reasons[reason] = reasons.get(reason, 0) + count
        return reasons

    @property
    def progressed_at(self) -> datetime:
        return max([self.updated_at, *(part.updated_at for part in self.parts)])


class FanoutPart(Base):
    """One range of a fan-out's subscribers, in user id order: from `first_user_id` (inclusive; NULL:
    from the first) up to `end_user_id` (exclusive; NULL: to the last). The ranges of a fan-out cover
    every user id, so a subscriber added while it runs falls in one of them."""

    __tablename__ = "fanout_parts"

    fanout_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("fanouts.id", ondelete="CASCADE"), primary_key=True
    )
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_user_id: Mapped[str | None] = mapped_column(String(255))
    end_user_id: Mapped[str | None] = mapped_column(String(255))
    # The last subscriber handled; NULL before the part's first chunk.
    last_user_id: Mapped[str | None] = mapped_column(String(255))
    done: Mapped[bool] = mapped_column(server_default=text("false"))
    created: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # {reason: count} of the skipped subscribers.
    skipped_reasons: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # Not taken up before then (the tenant's quota was spent); parts take turns by it.
    resume_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_fanout_parts_waiting", "resume_at", postgresql_where=text("NOT done")),)


class Template(Base):
    """Reusable content, rendered with Jinja2 (sandboxed) when a send names it."""

    __tablename__ = "templates"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    # Names a send must provide.
    variables: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    description: Mapped[str | None] = mapped_column(Text)
    # Priority of sends that name none; NULL: the tenant's default (`otp` templates: critical).
    priority: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    # Incremented by every update.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_templates_tenant_name"),)


class Recipient(Base):
    """An end user's addresses and preferences, so that sends may name just `user_id`."""

    __tablename__ = "recipients"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(32))
    push_tokens: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # `HH:MM-HH:MM` or `off`; NULL: the tenant's quiet hours.
    quiet_hours: Mapped[str | None] = mapped_column(String(32))
    locale: Mapped[str | None] = mapped_column(String(35))
    # {channel: false} opts out of a channel; a channel not named is opted in.
    preferences: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class RateLimitCounter(Base):
    """Sends counted in the current fixed window, per (tenant, channel, user id or recipient); written
    and read by SQL statements of their own (pulse.rate_limits.service): the model declares the table."""

    __tablename__ = "rate_limit_counters"

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(Text, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(index=True)
    count: Mapped[int] = mapped_column(Integer)

    __table_args__ = {"prefixes": ["UNLOGGED"]}


class ProviderSendBucket(Base):
    """A provider account's send-rate token bucket (pulse.delivery.rates), shared by every worker."""

    __tablename__ = "provider_send_buckets"

    # The provider (`smtp`, `twilio-secondary`, …), or `webhook host:port` per receiver host.
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # At `refilled_at`; below zero while sends are booked ahead of their tokens.
    tokens: Mapped[float] = mapped_column(Float)
    refilled_at: Mapped[datetime]
    # After the provider said "too many": no tokens until then, and the rate times `slowdown` after.
    paused_until: Mapped[datetime | None]
    slowdown: Mapped[float] = mapped_column(Float, server_default=text("1"))

    __table_args__ = {"prefixes": ["UNLOGGED"]}


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    provider: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # What the provider reported (e.g. an SMS's segments and encoding); {} for failed attempts.
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))

    __table_args__ = (UniqueConstraint("notification_id", "number"),)


class OutboxMessage(Base):
    """A publish owed to the broker. Deleted once RabbitMQ confirms it; whatever stays is swept."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    routing_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # The sweep leaves a row alone until then: the gateway's own publish gets a head start.
    available_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    notification_id: Mapped[uuid.UUID] = mapped_column(
        # Deferred: the record is written first so that a concurrent duplicate blocks on its key.
        ForeignKey("notifications.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED")
    )
    expires_at: Mapped[datetime] = mapped_column(index=True)


class InvalidPushToken(Base):
    """A device token FCM reported as unregistered (or invalid): the gateway refuses the tenant's
    further sends to it."""

    __tablename__ = "invalid_push_tokens"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    invalidated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Digest(Base):
    """Sends of one (tenant, user, channel, key) collected while its window is open, then sent as
    one notification (whose id is the digest's). Open while `closed_at` is NULL."""

    __tablename__ = "digests"

    id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
        primary_key=True,
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(100))
    # The body of the send that opened it, without its variables (those are its first event).
    request: Mapped[dict[str, Any]]
    max_events: Mapped[int] = mapped_column(Integer)
    event_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The events' variables as JSON, together: bounded like the count.
    event_bytes: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    opened_at: Mapped[datetime]
    closes_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_digests_open",
            "tenant_id",
            "user_id",
            "channel",
            "key",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
        ),
        Index("ix_digests_due", "closes_at", postgresql_where=text("closed_at IS NULL")),
    )


class DigestEvent(Base):
    """One collected send: its `variables`, numbered from 1 in the order they arrived."""

    __tablename__ = "digest_events"

    digest_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    variables: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class RealtimeConnection(Base):
    """An open WebSocket of a user on a realtime process; `last_seen_at` is refreshed by that process
    while it runs, so the rows of a process that died go stale."""

    __tablename__ = "realtime_connections"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    process_id: Mapped[str] = mapped_column(String(200))
    connected_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)

    __table_args__ = (
        Index("ix_realtime_connections_user", "tenant_id", "user_id"),
        {"prefixes": ["UNLOGGED"]},
    )


class RealtimeLastSeen(Base):
    """When a user last had a connection, kept once they have none left (presence)."""

    __tablename__ = "realtime_last_seen"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_seen_at: Mapped[datetime]


# Core handles on the hot tables: the delivery and acceptance paths run plain Core statements,
# several times cheaper in CPU than ORM-enabled ones.
notifications_table: Table = Notification.__table__  # type: ignore[assignment]
delivery_attempts_table: Table = DeliveryAttempt.__table__  # type: ignore[assignment]
outbox_table: Table = OutboxMessage.__table__  # type: ignore[assignment]
