"""Accepting, reading and listing notifications. Callers own the transaction (commit at the edge)."""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError
from sqlalchemy import DateTime, String, Uuid, bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, selectinload

from pulse.db.arrays import BinaryArray
from pulse.db.models import (
    IdempotencyRecord,
    Notification,
    Template,
    notifications_table,
    outbox_table,
)
from pulse.errors import Conflict, InvalidInput, NotFound, PulseError
from pulse.messaging.topology import routing_key
from pulse.notifications.schemas import (
    Content,
    EscalationStatus,
    NotificationRequest,
    check_content_fits,
)
from pulse.notifications.send_time import plan_send_time
from pulse.pagination import after_cursor, encode_cursor
from pulse.rate_limits.service import Quota, Send, SendLimits, admit
from pulse.recipients.push_tokens import invalidated_tokens
from pulse.recipients.service import Profile, address_for, find_recipients, opted_out, policy_for
from pulse.templates.rendering import render_template
from pulse.templates.service import find_templates
from pulse.timing.policy import NO_QUIET_HOURS_UTC, TenantPolicy
from pulse.vocabulary import Channel, Priority, Status

IDEMPOTENCY_TTL = timedelta(hours=24)

# Acceptance is the gateway's hottest path: plain Core inserts (no unit of work), built once so
# that SQLAlchemy reuses their compiled form; the values arrive as parameters.
_INSERT_OUTBOX = insert(outbox_table).returning(outbox_table.c.id)
_new_notification = Notification.__mapper__.class_manager.new_instance
# The notification columns COPY sends as JSON text.
_JSON_COLUMNS = frozenset(
    column.name for column in notifications_table.columns if isinstance(column.type, JSONB)
)
# A batch's outbox rows from two arrays: one short statement, where a multi-row VALUES of thousands
# of parameters cost more to build and parse than to run (fan-out chunks).
_INSERT_OUTBOX_ROWS = text(
    """
    INSERT INTO outbox (notification_id, routing_key, available_at)
    SELECT owed.notification_id, owed.routing_key, :available_at
    FROM unnest(:notification_ids, :routing_keys) AS owed (notification_id, routing_key)
    RETURNING id, notification_id
    """
).bindparams(
    bindparam("notification_ids", type_=BinaryArray(Uuid)),
    bindparam("routing_keys", type_=BinaryArray(String)),
    bindparam("available_at", type_=DateTime(timezone=True)),
)


@dataclass(frozen=True)
class Accepted:
    notification: Notification
    # The outbox row to publish after commit; None when the notification waits for the scheduler.
    outbox_id: int | None = None
    # True when an idempotent repeat returned the original notification.
    replayed: bool = False
    # Its rate-limit key's state after this send (None: not rate-limited).
    quota: Quota | None = None


class BatchRefused(PulseError):
    """An all-or-nothing batch with refused items: nothing was written. `errors` by item index."""

    def __init__(self, errors: dict[int, PulseError]) -> None:
        super().__init__(f"{len(errors)} of the notifications were refused; nothing was accepted")
        self.errors = errors


@dataclass(frozen=True)
class ListFilters:
    status: Status | None = None
    channel: Channel | None = None
    user_id: str | None = None
    priority: Priority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


# Fields added to the send body after Idempotency-Keys were first stored: left out while unset, so
# that a retry spanning an upgrade still matches the fingerprint stored before it.
_LATER_FIELDS = ("digest", "escalate", "topic")


def request_fingerprint(request: NotificationRequest) -> str:
    unset = {name for name in _LATER_FIELDS if getattr(request, name) is None}
    body = request.model_dump(mode="json", exclude=unset)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def accept_notification(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    request: NotificationRequest,
    idempotency_key: str | None = None,
    policy: TenantPolicy = NO_QUIET_HOURS_UTC,
    rate: SendLimits | None = None,
    schedule_id: uuid.UUID | None = None,
    publish_grace: timedelta = timedelta(seconds=5),
) -> Accepted:
    """Store the notification, in the caller's transaction, with the publish it owes when it is due
    now; a later one (`send_at`, quiet hours) is `scheduled` and released by the scheduler. Raises
    InvalidInput or RateLimited (the caller then rolls back: nothing is written)."""
    notification_id = uuid.uuid4()
    if idempotency_key is not None:
        original = claim_idempotency_key(
            session,
            tenant_id=tenant_id,
            key=idempotency_key,
            request=request,
            notification_id=notification_id,
        )
        if original is not None:
            return Accepted(
                notification=get_notification(session, tenant_id=tenant_id, id=original), replayed=True
            )
    (result,) = accept_notifications(
        session,
        tenant_id=tenant_id,
        requests=[request],
        policy=policy,
        rate=rate,
        schedule_id=schedule_id,
        publish_grace=publish_grace,
        ids=[notification_id],
    )
    if isinstance(result, PulseError):
        raise result
    return result


def accept_notifications(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    requests: Sequence[NotificationRequest],
    policy: TenantPolicy = NO_QUIET_HOURS_UTC,
    rate: SendLimits | None = None,
    all_or_nothing: bool = False,
    schedule_id: uuid.UUID | None = None,
    fanout_id: uuid.UUID | None = None,
    publish_grace: timedelta = timedelta(seconds=5),
    ids: Sequence[uuid.UUID] | None = None,
) -> list[Accepted | PulseError]:
    """Accept many at once, in the caller's transaction, with a constant number of statements: one
    query each for templates, recipient profiles and invalid push tokens, one to count rate limits,
    one COPY of all notifications and one insert of their outbox rows. Returns, per request in
    order, what was accepted or why it was refused; with `all_or_nothing`, a refusal raises
    BatchRefused instead (before anything is written)."""
    now = datetime.now(UTC)
    context = _Context.look_up(session, tenant_id=tenant_id, requests=requests, policy=policy, now=now)
    results: list[_Resolved | PulseError] = []
    for request in requests:
        try:
            results.append(context.resolve(request))
        except InvalidInput as error:
            results.append(error)
    _refuse_invalid_push_tokens(session, tenant_id, results)
    quotas = _take_rate_limits(session, tenant_id=tenant_id, rate=rate, results=results)
    if all_or_nothing and (errors := _errors_by_index(results)):
        raise BatchRefused(errors)
    resolved = [result for result in results if isinstance(result, _Resolved)]
    new_ids = iter(ids or [uuid.uuid4() for _ in resolved])
    rows = [
        {
            **result.values,
            "id": next(new_ids),
            "tenant_id": tenant_id,
            "created_at": now,
            "updated_at": now,
            "attempt_count": 0,
            "schedule_id": schedule_id,
            "fanout_id": fanout_id,
        }
        for result in resolved
    ]
    if rows:
        _copy_notifications(session, rows)
    due = [row for row in rows if row["scheduled_for"] is None]
    outbox_ids = {}
    if due:
        owed = session.execute(
            _INSERT_OUTBOX_ROWS,
            {
                "notification_ids": [row["id"] for row in due],
                "routing_keys": [routing_key(row["channel"], row["priority"]) for row in due],
                "available_at": now + publish_grace,
            },
        )
        outbox_ids = {notification_id: outbox_id for outbox_id, notification_id in owed}
    accepted = iter(rows)
    return [
        result if isinstance(result, PulseError) else _accepted(next(accepted), outbox_ids, quotas)
        for result in results
    ]


def _copy_notifications(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert the rows with one COPY, in the session's transaction: a fan-out chunk's or a batch's
    thousand took half the time and CPU of as many INSERTs (PostgreSQL runs one statement, and
    SQLAlchemy processes no parameters per row); one row costs what its INSERT did. A failure is
    raised as SQLAlchemy's DBAPIError subclass, as the INSERT's was (callers map those)."""
    columns = list(rows[0])
    statement = sql.SQL("COPY notifications ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    json_at = [index for index, column in enumerate(columns) if column in _JSON_COLUMNS]
    # JSON as text, which PostgreSQL parses as it would the adapted value: once per distinct object
    # (by identity; the rows keep them alive). A fan-out's rows share their content and metadata:
    # dumping them again per row took a fifth of the COPY's Python time.
    dumped: dict[int, str] = {}
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = [row[column] for column in columns]
                for index in json_at:
                    if (value := values[index]) is not None:
                        as_json = dumped.get(id(value))
                        if as_json is None:
                            as_json = dumped[id(value)] = json.dumps(value)
                        values[index] = as_json
                copy.write_row(values)
    except psycopg.Error as error:
        raise DBAPIError.instance(statement.as_string(driver), None, error, psycopg.Error) from error


def resolve_notification(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    request: NotificationRequest,
    policy: TenantPolicy,
    now: datetime,
) -> dict[str, Any]:
    """The notification's values as accepting `request` would store them (template rendered, recipient
    profile applied, send time planned), without writing anything. Raises InvalidInput."""
    context = _Context.look_up(session, tenant_id=tenant_id, requests=[request], policy=policy, now=now)
    return context.resolve(request).values


def check_template(session: Session, *, tenant_id: uuid.UUID, request: NotificationRequest) -> None:
    """Raises InvalidInput (at `template`) when the request names no active template of its channel."""
    if request.template is not None:
        templates = find_templates(session, tenant_id, {request.template})
        _Context(NO_QUIET_HOURS_UTC, templates, profiles={}, now=datetime.now(UTC))._template(request)


def _accepted(row: dict[str, Any], outbox_ids: dict[uuid.UUID, int], quotas: dict[Any, Quota]) -> Accepted:
    # The row as inserted, for the response; "metadata" is `meta` on the mapped class. Written
    # straight into the instance's dict (which SQLAlchemy reads attributes from): set one by one, with
    # the ORM's change tracking, they took several times longer than inserting the row (batches, fan-outs).
    # Made as the ORM makes the instances it loads, without the constructor's call and event (no
    # arguments to apply): half the cost of Notification().
    notification = _new_notification()
    notification.__dict__.update(row, meta=row["metadata"], attempts=[])
    del notification.__dict__["metadata"]
    return Accepted(
        notification=notification,
        outbox_id=outbox_ids.get(row["id"]),
        quota=quotas.get(_rate_key(row)),
    )


@dataclass(frozen=True)
class _Resolved:
    """A request with its template rendered and its profile applied: the row to insert, sans ids."""

    values: dict[str, Any]


@dataclass(frozen=True)
class _Context:
    """What resolving a batch of requests needs, looked up once for all of them."""

    policy: TenantPolicy
    templates: dict[str, Template]
    profiles: dict[str, Profile]
    now: datetime
    # The stored form of each request's Content, by identity: a fan-out's requests share one object
    # (copies of one send), whose dict their rows then share too (it is dumped to JSON once).
    _contents: dict[int, tuple[Content, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def look_up(
        cls,
        session: Session,
        *,
        tenant_id: uuid.UUID,
        requests: Sequence[NotificationRequest],
        policy: TenantPolicy,
        now: datetime,
    ) -> "_Context":
        names = {request.template for request in requests if request.template is not None}
        users = {request.user_id for request in requests if request.user_id is not None}
        return cls(
            policy=policy,
            templates=find_templates(session, tenant_id, names) if names else {},
            profiles=find_recipients(session, tenant_id, users) if users else {},
            now=now,
        )

    def resolve(self, request: NotificationRequest) -> _Resolved:
        """Raises InvalidInput naming the field at fault."""
        if request.topic is not None:
            raise InvalidInput(
                "a topic send is accepted on its own, by POST /v1/notifications", location=("body", "topic")
            )
        channel = request.channel
        profile = self.profiles.get(request.user_id) if request.user_id is not None else None
        template = self._template(request)
        priority = _priority(request, template, self.policy)
        if profile is not None and opted_out(profile, channel) and priority is not Priority.CRITICAL:
            raise InvalidInput(
                f"user {request.user_id!r} opted out of {channel} (only critical notifications still "
                "reach them there)",
                location=("body", "user_id"),
            )
        recipient = request.recipient or (profile and address_for(profile, channel))
        if not recipient:
            raise InvalidInput(
                f"no recipient: give `recipient`, or a user_id whose recipient profile has an address "
                f"for {channel}",
                location=("body", "recipient"),
            )
        if template is None:
            assert request.content is not None
            content = self._content(request.content)
        else:
            content = _render(template, request, locale=profile.locale if profile else None)
        policy = self.policy if profile is None else policy_for(profile, self.policy)
        timing = plan_send_time(request, priority=priority, policy=policy, now=self.now)
        return _Resolved(
            {
                "channel": channel,
                "priority": priority,
                "recipient": recipient,
                "user_id": request.user_id,
                "status": Status.QUEUED if timing.scheduled_for is None else Status.SCHEDULED,
                "content": content,
                "template": request.template,
                "metadata": request.metadata,
                "scheduled_for": timing.scheduled_for,
                "timezone": timing.timezone,
                "deferred_reason": timing.deferred_reason,
                "respect_quiet_hours": request.respect_quiet_hours,
                "callback_url": request.callback_url,
                **_escalation(request, due=timing.scheduled_for or self.now),
            }
        )

    def _content(self, content: Content) -> dict[str, Any]:
        known = self._contents.get(id(content))
        if known is None:
            # The Content is kept with its dict, so that its id cannot be another's while this lives.
            known = self._contents[id(content)] = (content, content.model_dump(exclude_none=True))
        return known[1]

    def _template(self, request: NotificationRequest) -> Template | None:
        if request.template is None:
            return None
        template = self.templates.get(request.template)
        problem = None
        if template is None:
            problem = f"there is no template named {request.template!r}"
        elif not template.active:
            problem = f"template {request.template!r} is inactive"
        elif template.channel != request.channel:
            problem = f"template {request.template!r} is for {template.channel}, not {request.channel}"
        if problem is not None:
            raise InvalidInput(problem, location=("body", "template"))
        return template


def _escalation(request: NotificationRequest, *, due: datetime) -> dict[str, Any]:
    """An inapp send's escalation plan, due `after_seconds` after the notification itself is."""
    if request.escalate is None:
        return {"escalation": None, "escalate_at": None}
    escalate_at = due + timedelta(seconds=request.escalate.after_seconds)
    plan = {**request.escalate.model_dump(mode="json"), "status": EscalationStatus.PENDING}
    return {"escalation": {**plan, "due_at": escalate_at.isoformat()}, "escalate_at": escalate_at}


def _bring_escalation_forward(
    session: Session,
    id: uuid.UUID,
    escalation: dict[str, Any] | None,
    escalate_at: datetime | None,
    *,
    due: datetime,
) -> None:
    """A pending escalation counts from when its notification is due: bring it forward to `due`."""
    if escalation is None or escalate_at is None:
        return
    sooner = due + timedelta(seconds=escalation["after_seconds"])
    if sooner < escalate_at:
        session.execute(
            update(Notification)
            .where(Notification.id == id)
            .values(escalate_at=sooner, escalation={**escalation, "due_at": sooner.isoformat()})
        )


def _priority(request: NotificationRequest, template: Template | None, policy: TenantPolicy) -> Priority:
    """The request's; else `critical` for one-time codes (a template named *otp*); else the
    template's default; else the tenant's."""
    if request.priority is not None:
        return request.priority
    if template is not None:
        if "otp" in template.name.lower():
            return Priority.CRITICAL
        if template.priority is not None:
            return Priority(template.priority)
    return policy.default_priority


def _render(template: Template, request: NotificationRequest, *, locale: str | None) -> dict[str, Any]:
    rendered = render_template(template, request.variables, locale=locale)
    try:
        content = Content.model_validate(rendered)
        check_content_fits(request.channel, content)
    except (ValidationError, ValueError) as error:
        reason = "; ".join(e["msg"] for e in error.errors()) if isinstance(error, ValidationError) else error
        raise InvalidInput(
            f"template {template.name!r} rendered content that {request.channel} cannot send: {reason}",
            location=("body", "variables"),
        ) from error
    return content.model_dump(exclude_none=True)


def _refuse_invalid_push_tokens(
    session: Session, tenant_id: uuid.UUID, results: list[_Resolved | PulseError]
) -> None:
    tokens = {
        result.values["recipient"]
        for result in results
        if isinstance(result, _Resolved) and result.values["channel"] is Channel.PUSH
    }
    invalidated = invalidated_tokens(session, tenant_id, tokens)
    for index, result in enumerate(results):
        if not isinstance(result, _Resolved) or result.values["channel"] is not Channel.PUSH:
            continue
        if when := invalidated.get(result.values["recipient"]):
            results[index] = InvalidInput(
                f"device token was reported invalid by FCM at {when.isoformat()}",
                location=("body", "recipient"),
            )


def _rate_key(values: dict[str, Any]) -> Send:
    return Send(values["channel"], user_id=values["user_id"], recipient=values["recipient"])


def _take_rate_limits(
    session: Session, *, tenant_id: uuid.UUID, rate: SendLimits | None, results: list[_Resolved | PulseError]
) -> dict[Send, Quota]:
    """Count the resolved sends; those over a limit become RateLimited (the first ones are granted)."""
    if rate is None:
        return {}
    sends = {
        index: _rate_key(result.values)
        for index, result in enumerate(results)
        if isinstance(result, _Resolved)
    }
    admission = admit(session, tenant_id=tenant_id, limits=rate, sends=list(sends.values()))
    indexes = list(sends)
    for position, refusal in admission.refusals.items():
        results[indexes[position]] = refusal
    return admission.quotas


def _errors_by_index(results: Sequence[object]) -> dict[int, PulseError]:
    return {index: result for index, result in enumerate(results) if isinstance(result, PulseError)}


def claim_idempotency_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    key: str,
    request: NotificationRequest,
    notification_id: uuid.UUID,
) -> uuid.UUID | None:
    """Reserve the key for this request; return the original notification's id if it was already used.

    A concurrent request with the same key blocks on the primary key until the first one commits, so
    two racing requests create one notification.
    """
    now = datetime.now(UTC)
    fingerprint = request_fingerprint(request)
    values = {
        "tenant_id": tenant_id,
        "key": key,
        "request_hash": fingerprint,
        "notification_id": notification_id,
        "expires_at": now + IDEMPOTENCY_TTL,
    }
    statement = pg_insert(IdempotencyRecord).values(values)
    reserved = session.scalar(
        statement.on_conflict_do_update(
            index_elements=[IdempotencyRecord.tenant_id, IdempotencyRecord.key],
            set_={
                name: statement.excluded[name] for name in ("request_hash", "notification_id", "expires_at")
            },
            where=IdempotencyRecord.expires_at <= now,
        ).returning(IdempotencyRecord.key)
    )
    if reserved is not None:
        return None
    record = session.get_one(IdempotencyRecord, (tenant_id, key))
    if record.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was already used with a different request body")
    return record.notification_id


def get_notification(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Notification:
    notification = session.scalars(
        select(Notification)
        .options(selectinload(Notification.attempts))
        .where(Notification.id == id, Notification.tenant_id == tenant_id)
    ).one_or_none()
    if notification is None:
        raise NotFound(f"notification {id} not found")
    return notification


def list_notifications(
    session: Session, *, tenant_id: uuid.UUID, filters: ListFilters, limit: int, cursor: str | None
) -> tuple[list[Notification], str | None]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while rows arrive."""
    query = select(Notification).where(Notification.tenant_id == tenant_id)
    for column, value in (
        (Notification.status, filters.status),
        (Notification.channel, filters.channel),
        (Notification.user_id, filters.user_id),
        (Notification.priority, filters.priority),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.created_after is not None:
        query = query.where(Notification.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(Notification.created_at < filters.created_before)
    if cursor is not None:
        query = query.where(after_cursor(cursor, Notification.created_at, Notification.id))
    rows = list(
        session.scalars(
            query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit + 1)
        )
    )
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


def cancel_notification(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Notification:
    """Cancel a notification not yet handed to a provider (`scheduled`, or `queued` and unclaimed).
    A worker that receives its message later finds it cancelled and drops it."""
    cancelled = session.execute(
        update(Notification)
        .where(
            Notification.id == id,
            Notification.tenant_id == tenant_id,
            Notification.status.in_([Status.SCHEDULED, Status.QUEUED]),
        )
        .values(status=Status.CANCELLED, updated_at=datetime.now(UTC))
        .returning(Notification.id)
    ).one_or_none()
    notification = get_notification(session, tenant_id=tenant_id, id=id)
    if cancelled is None:
        raise Conflict(
            f"notification {id} is {notification.status}; only scheduled or queued ones can be cancelled"
        )
    return notification


def force_notification(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    id: uuid.UUID,
    publish_grace: timedelta = timedelta(seconds=5),
) -> tuple[int, Notification]:
    """Send now a notification that waits (`scheduled` for send_at or quiet hours, or `retrying`).
    Returns the outbox row it owes, to publish after commit, and the notification."""
    now = datetime.now(UTC)
    forced = session.execute(
        update(Notification)
        .where(
            Notification.id == id,
            Notification.tenant_id == tenant_id,
            Notification.status.in_([Status.SCHEDULED, Status.RETRYING]),
        )
        .values(
            status=Status.QUEUED,
            scheduled_for=None,
            deferred_reason=None,
            next_attempt_at=None,
            updated_at=now,
        )
        .returning(
            Notification.channel, Notification.priority, Notification.escalation, Notification.escalate_at
        )
    ).one_or_none()
    if forced is None:
        status = get_notification(session, tenant_id=tenant_id, id=id).status
        raise Conflict(f"notification {id} is {status}; only scheduled or retrying ones can be forced")
    _bring_escalation_forward(session, id, forced.escalation, forced.escalate_at, due=now)
    outbox_id = (
        session.execute(
            _INSERT_OUTBOX,
            {
                "notification_id": id,
                "routing_key": routing_key(Channel(forced.channel), Priority(forced.priority)),
                "available_at": now + publish_grace,
            },
        )
        .one()
        .id
    )
    return outbox_id, get_notification(session, tenant_id=tenant_id, id=id)
