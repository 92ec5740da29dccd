"""The API's resources, each operation written once (see `_core`). A new resource is a `Resource`
subclass here and one line in `_client.Client.__init__`."""

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pulse_client._core import (
    Call,
    M,
    Resource,
    body,
    operation,
    pages,
    query,
    returns,
    returns_nothing,
    returns_one_of,
    segment,
)
from pulse_client.models import (
    AnalyticsSummary,
    BatchMode,
    BatchResponse,
    BulkReplayResult,
    Channel,
    DeadLetterPage,
    DigestedSend,
    NotificationDetail,
    NotificationPage,
    NotificationRequest,
    PreviewOut,
    Priority,
    RecipientIn,
    RecipientOut,
    ScheduleDetail,
    ScheduleOut,
    SchedulePage,
    ScheduleRequest,
    Status,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplateReplacement,
    TopicSendAccepted,
    WebhookSecret,
)

Body = Mapping[str, Any]
Id = uuid.UUID | str


class Notifications(Resource[M]):
    def _send(
        self, notification: NotificationRequest | Body, *, idempotency_key: str | None = None
    ) -> Call[NotificationDetail | DigestedSend | TopicSendAccepted]:
        """Send a notification (`202`: it is committed); with `digest` the answer is a DigestedSend, with
        `topic` a TopicSendAccepted. Every send carries an `Idempotency-Key` (a new uuid4 unless given),
        the same on each retry: a repeat returns the original notification. A topic send takes none
        (the gateway refuses it), so it is not sent again when its answer is lost."""
        sent = body(notification)
        key = idempotency_key or (None if sent.get("topic") is not None else str(uuid.uuid4()))
        return Call(
            "POST",
            "/v1/notifications",
            returns_one_of(NotificationDetail | DigestedSend | TopicSendAccepted),
            body=sent,
            headers={} if key is None else {"Idempotency-Key": key},
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
        request = {"channel": channel, "since": since, "until": until}
        selection = body({name: value for name, value in request.items() if value is not None})
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
