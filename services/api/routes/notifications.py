import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from pulse.channels.push import refuse_invalid_token
from pulse.channels.ssrf import Allowlist, RefusedUrl, check_literal
from pulse.db import transaction
from pulse.errors import InvalidInput
from pulse.messaging.topology import routing_key
from pulse.notifications.schemas import (
    NotificationDetail,
    NotificationOut,
    NotificationPage,
    NotificationRequest,
)
from pulse.notifications.service import (
    ListFilters,
    accept_notification,
    cancel_notification,
    force_notification,
    get_notification,
    list_notifications,
)
from pulse.observability.metrics import NOTIFICATIONS_ACCEPTED
from pulse.vocabulary import Channel, Priority, Status
from services.api.deps import GatewayDep, ReaderDep, SenderDep, SessionDep

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The key lacks the needed scope"},
    422: {"description": "Invalid input (problem+json with field-level `errors`)"},
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationDetail,
    responses={
        **ERROR_RESPONSES,
        200: {"description": "Idempotent replay: the original notification (`Idempotent-Replayed: true`)"},
        409: {"description": "Idempotency-Key reused with a different body"},
        413: {"description": "Body over the size limit"},
        503: {"description": "Database unavailable; nothing was accepted"},
    },
)
def send_notification(
    request: NotificationRequest,
    principal: SenderDep,
    gateway: GatewayDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Accept a notification. The 202 is sent only after it is committed to PostgreSQL."""
    if request.channel not in gateway.settings.enabled_channels:
        enabled = ", ".join(gateway.settings.enabled_channels)
        raise InvalidInput(
            f"channel '{request.channel}' is not enabled on this deployment (enabled: {enabled})",
            location=("body", "channel"),
        )
    if request.channel is Channel.WEBHOOK:
        try:
            check_literal(request.recipient, Allowlist.parse(gateway.settings.webhook_allowlist))
        except RefusedUrl as error:
            refused = f"refused by the SSRF guard: {error}"
            raise InvalidInput(refused, location=("body", "recipient")) from error
    with transaction(gateway.session_factory) as session:
        if request.channel is Channel.PUSH:
            refuse_invalid_token(session, request.recipient)
        accepted = accept_notification(
            session,
            tenant_id=principal.tenant_id,
            request=request,
            idempotency_key=idempotency_key,
            policy=gateway.policy_for(principal),
            publish_grace=timedelta(seconds=gateway.settings.publish_grace_seconds),
        )
    notification = accepted.notification
    # Serialised here rather than by FastAPI, which would validate the model a second time.
    body = NotificationDetail.model_validate(notification).model_dump_json()
    if accepted.replayed:
        return Response(body, status.HTTP_200_OK, {"Idempotent-Replayed": "true"}, "application/json")
    if accepted.outbox_id is not None:
        gateway.publisher.publish(
            outbox_id=accepted.outbox_id,
            notification_id=notification.id,
            routing_key=routing_key(request.channel, request.priority),
        )
    NOTIFICATIONS_ACCEPTED.labels(request.channel, request.priority).inc()
    return Response(body, status.HTTP_202_ACCEPTED, media_type="application/json")


@router.post(
    "/{notification_id}/cancel",
    response_model=NotificationDetail,
    responses={
        **ERROR_RESPONSES,
        404: {"description": "No such notification"},
        409: {"description": "Too late"},
    },
)
def cancel(notification_id: uuid.UUID, principal: SenderDep, gateway: GatewayDep) -> NotificationDetail:
    """Cancel a notification that is `scheduled`, or `queued` and not yet taken by a worker."""
    with transaction(gateway.session_factory) as session:
        return NotificationDetail.model_validate(
            cancel_notification(session, tenant_id=principal.tenant_id, id=notification_id)
        )


@router.post(
    "/{notification_id}/force",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationDetail,
    responses={
        **ERROR_RESPONSES,
        404: {"description": "No such notification"},
        409: {"description": "Not waiting"},
    },
)
def force(notification_id: uuid.UUID, principal: SenderDep, gateway: GatewayDep) -> NotificationDetail:
    """Send now, ignoring `send_at`, quiet hours or a retry's backoff."""
    with transaction(gateway.session_factory) as session:
        accepted = force_notification(
            session,
            tenant_id=principal.tenant_id,
            id=notification_id,
            publish_grace=timedelta(seconds=gateway.settings.publish_grace_seconds),
        )
    notification = accepted.notification
    assert accepted.outbox_id is not None
    gateway.publisher.publish(
        outbox_id=accepted.outbox_id,
        notification_id=notification.id,
        routing_key=routing_key(Channel(notification.channel), Priority(notification.priority)),
    )
    return NotificationDetail.model_validate(notification)


@router.get(
    "/{notification_id}",
    response_model=NotificationDetail,
    responses={**ERROR_RESPONSES, 404: {"description": "No such notification for this tenant"}},
)
def read_notification(
    notification_id: uuid.UUID, principal: ReaderDep, session: SessionDep
) -> NotificationDetail:
    """One notification with its delivery attempts."""
    return NotificationDetail.model_validate(
        get_notification(session, tenant_id=principal.tenant_id, id=notification_id)
    )


@router.get("", response_model=NotificationPage, responses=ERROR_RESPONSES)
def search_notifications(
    principal: ReaderDep,
    session: SessionDep,
    status: Status | None = None,
    channel: Channel | None = None,
    user_id: str | None = None,
    priority: Priority | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> NotificationPage:
    """Notifications newest first; follow `next_cursor` for the next page."""
    filters = ListFilters(
        status=status,
        channel=channel,
        user_id=user_id,
        priority=priority,
        created_after=created_after,
        created_before=created_before,
    )
    rows, next_cursor = list_notifications(
        session, tenant_id=principal.tenant_id, filters=filters, limit=limit, cursor=cursor
    )
    return NotificationPage(
        items=[NotificationOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )
