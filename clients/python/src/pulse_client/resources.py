"""The API's resources, each operation written once (see `_core`). A new resource is a `Resource`
subclass here and one line in `_client.Client.__init__`."""

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from pulse_client._core import (
    Call,
    M,
    Resource,
    T,
    body,
    fields,
    operation,
    pages,
    query,
    returns,
    returns_nothing,
    segment,
)
from pulse_client.models import (
    AnalyticsSummary,
    ApiKeyCreated,
    ApiKeyPage,
    ApiKeyRequest,
    AuditPage,
    BatchMode,
    BatchResponse,
    BulkReplayResult,
    Channel,
    DeadLetterPage,
    DigestedSend,
    FanoutOut,
    InboxItem,
    InboxPage,
    InboxStatus,
    NotificationDetail,
    NotificationPage,
    NotificationRequest,
    Presence,
    PreviewOut,
    Priority,
    ReadAll,
    RecipientIn,
    RecipientOut,
    ScheduleDetail,
    ScheduleOut,
    SchedulePage,
    ScheduleRequest,
    Status,
    SubscriberPage,
    SubscribersAdded,
    SubscribersRemoved,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplateReplacement,
    TokenOut,
    TopicOut,
    TopicSendAccepted,
    UnreadCount,
    WebhookSecret,
)

Body = Mapping[str, Any]
Id = uuid.UUID | str


# Sends whose answer is not a notification: the field that makes them so, and their operation.
SEND_KINDS = {"digest": "send_digest", "topic": "send_to_topic"}


def _checked_send(notification: NotificationRequest | Body, kind: str | None) -> Any:
    """The body of a send that has the field `kind` (`digest`, `topic`, or neither) and not the other:
    each kind answers another model, read by its own operation."""
    sent = body(notification)
    for name, operation_name in SEND_KINDS.items():
        given = sent.get(name) is not None
        if given and name != kind:
            raise ValueError(f"a send with `{name}` is made with `notifications.{operation_name}`")
        if name == kind and not given:
            raise ValueError(f"`notifications.{operation_name}` needs `{name}`")
    return sent


def _sending(
    notification: NotificationRequest | Body,
    kind: str | None,
    read: Callable[[httpx.Response], T],
    idempotency_key: str | None,
) -> Call[T]:
    key = idempotency_key or str(uuid.uuid4())
    return Call(
        "POST",
        "/v1/notifications",
        read,
        body=_checked_send(notification, kind),
        headers={"Idempotency-Key": key},
    )


class Notifications(Resource[M]):
    def _send(
        self, notification: NotificationRequest | Body, *, idempotency_key: str | None = None
    ) -> Call[NotificationDetail]:
        """Send a notification (`202`: it is committed). Every send carries an `Idempotency-Key` (a new
        uuid4 unless given), the same on each retry: a repeat returns the original notification. A send
        with `digest` is made with `send_digest`, one with `topic` with `send_to_topic`."""
        return _sending(notification, None, returns(NotificationDetail), idempotency_key)

    def _send_digest(
        self, notification: NotificationRequest | Body, *, idempotency_key: str | None = None
    ) -> Call[DigestedSend]:
        """Collect a send with `digest` (and `user_id`, `template`) into the user's open digest of its
        key, opening one if none is; the answer names the combined notification (`digest_id`). The
        `Idempotency-Key` is as for `send`: a repeat is not collected twice."""
        return _sending(notification, "digest", returns(DigestedSend), idempotency_key)

    def _send_to_topic(self, notification: NotificationRequest | Body) -> Call[TopicSendAccepted]:
        """Send to every subscriber of the request's `topic`: the answer is the committed fan-out
        (`fanout_id`, see `fanouts.get`), whose notifications come after. The gateway takes no
        `Idempotency-Key` with a topic, so a send whose answer was lost is not retried."""
        return Call(
            "POST",
            "/v1/notifications",
            returns(TopicSendAccepted),
            body=_checked_send(notification, "topic"),
        )

    def _send_batch(
        self,
        notifications: Sequence[NotificationRequest | Body],
        *,
        mode: BatchMode = BatchMode.BEST_EFFORT,
    ) -> Call[BatchResponse]:
        """Send 1 to 1000 notifications in one transaction; one result per item, in order."""
        items = [body(notification) for notification in notifications]
        return Call(
            "POST",
            "/v1/notifications/batch",
            returns(BatchResponse),
            body={"mode": BatchMode(mode).value, "notifications": items},
        )

    def _get(self, notification_id: Id) -> Call[NotificationDetail]:
        """One notification with its delivery attempts."""
        return Call("GET", f"/v1/notifications/{segment(notification_id)}", returns(NotificationDetail))

    def _search(
        self,
        *,
        status: Status | None = None,
        channel: Channel | None = None,
        user_id: str | None = None,
        priority: Priority | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Call[NotificationPage]:
        """Notifications newest first, one page (`list`) or every page (`iter`)."""
        params = query(
            status=status,
            channel=channel,
            user_id=user_id,
            priority=priority,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )
        return Call("GET", "/v1/notifications", returns(NotificationPage), params=params)

    def _cancel(self, notification_id: Id) -> Call[NotificationDetail]:
        """Cancel a `scheduled` notification, or a `queued` one no worker took yet (else `ConflictError`)."""
        return Call(
            "POST", f"/v1/notifications/{segment(notification_id)}/cancel", returns(NotificationDetail)
        )

    def _force(self, notification_id: Id) -> Call[NotificationDetail]:
        """Send a waiting notification now, ignoring `send_at`, quiet hours or a retry's backoff."""
        return Call(
            "POST", f"/v1/notifications/{segment(notification_id)}/force", returns(NotificationDetail)
        )

    send = operation(_send)
    send_digest = operation(_send_digest)
    send_to_topic = operation(_send_to_topic)
    send_batch = operation(_send_batch)
    get = operation(_get)
    list = operation(_search)
    iter = pages(_search)
    cancel = operation(_cancel)
    force = operation(_force)


class Templates(Resource[M]):
    def _create(self, template: TemplateIn | Body) -> Call[TemplateOut]:
        """Store a template (`ConflictError` if the name is taken)."""
        return Call("POST", "/v1/templates", returns(TemplateOut), body=body(template))

    def _get(self, name: str) -> Call[TemplateOut]:
        """One template, at its current version."""
        return Call("GET", f"/v1/templates/{segment(name)}", returns(TemplateOut))

    def _browse(
        self,
        *,
        channel: Channel | None = None,
        active: bool | None = None,
        page: int | None = None,
        size: int | None = None,
    ) -> Call[TemplatePage]:
        """Templates by name, a page at a time (`page` from 1), with the total count."""
        params = query(channel=channel, active=active, page=page, size=size)
        return Call("GET", "/v1/templates", returns(TemplatePage), params=params)

    def _replace(self, name: str, template: TemplateReplacement | Body) -> Call[TemplateOut]:
        """Replace every field but the name; the version goes up by one."""
        return Call("PUT", f"/v1/templates/{segment(name)}", returns(TemplateOut), body=body(template))

    def _delete(self, name: str) -> Call[None]:
        return Call("DELETE", f"/v1/templates/{segment(name)}", returns_nothing)

    def _preview(
        self, name: str, variables: Mapping[str, Any] | None = None, *, locale: str | None = None
    ) -> Call[PreviewOut]:
        """Render it without sending (`InvalidRequestError` names missing variables)."""
        request = {"variables": dict(variables or {}), **({"locale": locale} if locale else {})}
        return Call("POST", f"/v1/templates/{segment(name)}/preview", returns(PreviewOut), body=body(request))

    create = operation(_create)
    get = operation(_get)
    list = operation(_browse)
    replace = operation(_replace)
    delete = operation(_delete)
    preview = operation(_preview)


class Schedules(Resource[M]):
    def _create(self, schedule: ScheduleRequest | Body) -> Call[ScheduleOut]:
        """Send a notification every time a cron expression fires in a time zone."""
        return Call("POST", "/v1/schedules", returns(ScheduleOut), body=body(schedule))

    def _browse(self, *, limit: int | None = None, cursor: str | None = None) -> Call[SchedulePage]:
        """Schedules newest first, one page (`list`) or every page (`iter`)."""
        return Call("GET", "/v1/schedules", returns(SchedulePage), params=query(limit=limit, cursor=cursor))

    def _get(self, schedule_id: Id, *, history: int | None = None) -> Call[ScheduleDetail]:
        """One schedule with its latest notifications."""
        return Call(
            "GET",
            f"/v1/schedules/{segment(schedule_id)}",
            returns(ScheduleDetail),
            params=query(history=history),
        )

    def _delete(self, schedule_id: Id) -> Call[None]:
        return Call("DELETE", f"/v1/schedules/{segment(schedule_id)}", returns_nothing)

    def _pause(self, schedule_id: Id) -> Call[ScheduleOut]:
        return Call("POST", f"/v1/schedules/{segment(schedule_id)}/pause", returns(ScheduleOut))

    def _resume(self, schedule_id: Id) -> Call[ScheduleOut]:
        return Call("POST", f"/v1/schedules/{segment(schedule_id)}/resume", returns(ScheduleOut))

    create = operation(_create)
    list = operation(_browse)
    iter = pages(_browse)
    get = operation(_get)
    delete = operation(_delete)
    pause = operation(_pause)
    resume = operation(_resume)


class Recipients(Resource[M]):
    def _put(self, user_id: str, profile: RecipientIn | Body) -> Call[RecipientOut]:
        """Create or replace the end user's whole profile (a field left out is cleared)."""
        return Call("PUT", f"/v1/recipients/{segment(user_id)}", returns(RecipientOut), body=body(profile))

    def _get(self, user_id: str) -> Call[RecipientOut]:
        return Call("GET", f"/v1/recipients/{segment(user_id)}", returns(RecipientOut))

    def _delete(self, user_id: str) -> Call[None]:
        return Call("DELETE", f"/v1/recipients/{segment(user_id)}", returns_nothing)

    put = operation(_put)
    get = operation(_get)
    delete = operation(_delete)


class DeadLetters(Resource[M]):
    def _browse(self, *, channel: Channel | None = None, limit: int | None = None) -> Call[DeadLetterPage]:
        """Failed notifications, most recent failure first, with their attempts."""
        return Call(
            "GET", "/v1/dead-letters", returns(DeadLetterPage), params=query(channel=channel, limit=limit)
        )

    def _replay(self, notification_id: Id) -> Call[NotificationDetail]:
        """Re-queue one failed notification with a fresh attempt budget."""
        return Call(
            "POST", f"/v1/dead-letters/{segment(notification_id)}/replay", returns(NotificationDetail)
        )

    def _replay_all(
        self, channel: Channel, *, since: datetime | None = None, until: datetime | None = None
    ) -> Call[BulkReplayResult]:
        """Re-queue a channel's failed notifications (failed in [`since`, `until`) when given)."""
        selection = fields(channel=channel, since=since, until=until)
        return Call("POST", "/v1/dead-letters/replay", returns(BulkReplayResult), body=selection)

    list = operation(_browse)
    replay = operation(_replay)
    replay_all = operation(_replay_all)


class WebhookSecrets(Resource[M]):
    def _get(self) -> Call[WebhookSecret]:
        """The tenant's `whsec_…` secret that webhook deliveries and status callbacks are signed with."""
        return Call("GET", "/v1/webhook-secret", returns(WebhookSecret))

    def _rotate(self) -> Call[WebhookSecret]:
        """Replace the secret; the new one signs from then on."""
        return Call("POST", "/v1/webhook-secret/rotate", returns(WebhookSecret))

    get = operation(_get)
    rotate = operation(_rotate)


class Analytics(Resource[M]):
    def _summary(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Call[AnalyticsSummary]:
        """Delivery statistics per channel over [`since`, `until`), throughput and queue depths."""
        return Call(
            "GET", "/v1/analytics/summary", returns(AnalyticsSummary), params=query(since=since, until=until)
        )

    summary = operation(_summary)


class Auth(Resource[M]):
    def _token(self, user_id: str, ttl_seconds: int | None = None) -> Call[TokenOut]:
        """A short-lived token for one of your end users (valid 60 s to 24 h; default 1 h), to hand to
        their browser or app: it reads that user's inbox (`Pulse(token=...)`) and opens the realtime
        WebSocket. Needs a key with `send` or `admin`."""
        return Call(
            "POST", "/v1/auth/token", returns(TokenOut), body=fields(user_id=user_id, ttl_seconds=ttl_seconds)
        )

    token = operation(_token)


def _read_unread_count(response: httpx.Response) -> int:
    return UnreadCount.model_validate_json(response.content).unread_count


class Inbox(Resource[M]):
    """An end user's in-app notifications: only with a client made with their token, `Pulse(token=...)`
    (an API key is refused with `AuthenticationError`)."""

    def _browse(
        self, *, status: InboxStatus | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Call[InboxPage]:
        """The user's items newest first (`unread`, `read` or `all`), one page with the unread count
        (`list`) or every item (`iter`)."""
        return Call(
            "GET", "/v1/inbox", returns(InboxPage), params=query(status=status, limit=limit, cursor=cursor)
        )

    def _unread_count(self) -> Call[int]:
        """How many of the user's items are unread."""
        return Call("GET", "/v1/inbox/unread-count", _read_unread_count)

    def _mark_read(self, notification_id: Id) -> Call[InboxItem]:
        """Mark one item read (again: no change); `NotFoundError` if it is not the user's."""
        return Call("PATCH", f"/v1/inbox/{segment(notification_id)}/read", returns(InboxItem))

    def _mark_all_read(self) -> Call[ReadAll]:
        """Mark every unread item read (the newest 10 000 per call: call again while `updated` is that)."""
        return Call("POST", "/v1/inbox/read-all", returns(ReadAll))

    list = operation(_browse)
    iter = pages(_browse)
    unread_count = operation(_unread_count)
    mark_read = operation(_mark_read)
    mark_all_read = operation(_mark_all_read)


class Presences(Resource[M]):
    def _get(self, user_id: str) -> Call[Presence]:
        """Whether the user has open realtime connections, how many, and when one was last alive."""
        return Call("GET", f"/v1/presence/{segment(user_id)}", returns(Presence))

    get = operation(_get)


def _subscribers(user_ids: Sequence[str]) -> Any:
    if isinstance(user_ids, str):  # a str is a sequence too: of one-letter user ids
        raise TypeError("user_ids is a list of user ids, not one")
    return {"user_ids": list(user_ids)}


class Topics(Resource[M]):
    def _subscribe(self, key: str, user_ids: Sequence[str]) -> Call[SubscribersAdded]:
        """Subscribe 1 to 1000 users to the topic (creating it); those already subscribed stay so."""
        return Call(
            "PUT",
            f"/v1/topics/{segment(key)}/subscribers",
            returns(SubscribersAdded),
            body=_subscribers(user_ids),
        )

    def _unsubscribe(self, key: str, user_ids: Sequence[str]) -> Call[SubscribersRemoved]:
        """Unsubscribe 1 to 1000 users (others are ignored); a topic without subscribers is gone."""
        return Call(
            "DELETE",
            f"/v1/topics/{segment(key)}/subscribers",
            returns(SubscribersRemoved),
            body=_subscribers(user_ids),
        )

    def _get(self, key: str) -> Call[TopicOut]:
        """The topic and its number of subscribers (`NotFoundError` when it has none)."""
        return Call("GET", f"/v1/topics/{segment(key)}", returns(TopicOut))

    def _browse_subscribers(
        self, key: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Call[SubscriberPage]:
        """The topic's subscribers in user id order, one page (`list_subscribers`) or every page
        (`iter_subscribers`)."""
        return Call(
            "GET",
            f"/v1/topics/{segment(key)}/subscribers",
            returns(SubscriberPage),
            params=query(limit=limit, cursor=cursor),
        )

    subscribe = operation(_subscribe)
    unsubscribe = operation(_unsubscribe)
    get = operation(_get)
    list_subscribers = operation(_browse_subscribers)
    iter_subscribers = pages(_browse_subscribers)


class Fanouts(Resource[M]):
    def _get(self, fanout_id: Id) -> Call[FanoutOut]:
        """A topic send's progress: notifications created and subscribers skipped so far, by reason."""
        return Call("GET", f"/v1/fanouts/{segment(fanout_id)}", returns(FanoutOut))

    def _cancel(self, fanout_id: Id) -> Call[FanoutOut]:
        """Stop a running fan-out (`ConflictError` once it is done); what it created stays."""
        return Call("POST", f"/v1/fanouts/{segment(fanout_id)}/cancel", returns(FanoutOut))

    get = operation(_get)
    cancel = operation(_cancel)


class ApiKeys(Resource[M]):
    def _create(self, key: ApiKeyRequest | Body) -> Call[ApiKeyCreated]:
        """Issue a key with some of this key's scopes; its `key` is shown this once."""
        return Call("POST", "/v1/api-keys", returns(ApiKeyCreated), body=body(key))

    def _browse(self, *, limit: int | None = None, cursor: str | None = None) -> Call[ApiKeyPage]:
        """The tenant's keys (revoked and expired too, never the secrets) newest first, one page (`list`)
        or every page (`iter`)."""
        return Call("GET", "/v1/api-keys", returns(ApiKeyPage), params=query(limit=limit, cursor=cursor))

    def _revoke(self, key_id: Id) -> Call[None]:
        """Every gateway refuses the key within a few seconds; it stays listed, with `revoked_at`."""
        return Call("DELETE", f"/v1/api-keys/{segment(key_id)}", returns_nothing)

    create = operation(_create)
    list = operation(_browse)
    iter = pages(_browse)
    revoke = operation(_revoke)


class AuditLog(Resource[M]):
    def _browse(
        self,
        *,
        action: str | None = None,
        object_type: str | None = None,
        object_id: Id | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Call[AuditPage]:
        """Changes to the tenant's configuration, newest first, filtered exactly (`action=
        "template.update"`, `object_type="template", object_id="welcome"`): one page (`list`) or every
        page (`iter`)."""
        params = query(
            action=action, object_type=object_type, object_id=object_id, limit=limit, cursor=cursor
        )
        return Call("GET", "/v1/audit-log", returns(AuditPage), params=params)

    list = operation(_browse)
    iter = pages(_browse)
