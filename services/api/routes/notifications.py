import uuid
from collections.abc import Sequence
from datetime import timedelta
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.digests.schemas import DigestedSend
from pulse.digests.service import close_now, collect
from pulse.errors import InvalidInput, PulseError, RateLimited
from pulse.inputs import DateTimeInput
from pulse.notifications.acceptance import screen
from pulse.notifications.intake import Send
from pulse.notifications.schemas import (
    BatchItemResult,
    BatchMode,
    BatchRequest,
    BatchResponse,
    ItemError,
    NotificationDetail,
    NotificationOut,
    NotificationPage,
    NotificationRequest,
)
from pulse.notifications.service import (
    Accepted,
    BatchRefused,
    ListFilters,
    accept_notifications,
    cancel_notification,
    force_notification,
    get_notification,
    list_notifications,
)
from pulse.observability.metrics import NOTIFICATIONS_ACCEPTED
from pulse.tenants.service import Principal
from pulse.text import NO_NUL_CHARACTERS
from pulse.topics.schemas import TopicSendAccepted
from pulse.topics.service import start_fanout
from pulse.vocabulary import Channel, Priority, Status
from services.api.bodies import StrictJsonRoute
from services.api.deps import Gateway, GatewayDep, ReaderDep, SenderDep, SessionDep
from services.api.problems import problem, rate_limit_headers

router = APIRouter(prefix="/v1/notifications", tags=["notifications"], route_class=StrictJsonRoute)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The key lacks the needed scope"},
    422: {"description": "Invalid input (problem+json with field-level `errors`)"},
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationDetail | DigestedSend | TopicSendAccepted,
    responses={
        **ERROR_RESPONSES,
        202: {
            "description": "Accepted: the notification; for a send with `digest` a DigestedSend, with "
            "`topic` a TopicSendAccepted"
        },
        200: {
            "description": "Idempotent replay: the original answer (`Idempotent-Replayed: true`)",
            "model": NotificationDetail | DigestedSend,
        },
        404: {"description": "`topic`: the topic has no subscribers"},
        409: {"description": "Idempotency-Key reused with a different body"},
        413: {"description": "Body over the size limit"},
        429: {"description": "Rate limit exceeded (`Retry-After`; RateLimit-* headers)"},
        503: {"description": "Database unavailable; nothing was accepted"},
    },
)
async def send_notification(
    request: NotificationRequest,
    principal: SenderDep,
    gateway: GatewayDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Accept a notification. The 202 is sent only after it is committed to PostgreSQL. With `topic`,
    the answer is the committed fan-out (`TopicSendAccepted`), whose notifications come after."""
    screen(request, gateway.settings)
    if request.digest is not None:
        return await run_in_threadpool(_collect, request, principal, gateway, idempotency_key)
    if request.topic is not None:
        return await run_in_threadpool(_send_to_topic, request, principal, gateway, idempotency_key)
    accepted = await gateway.intake.accept(
        Send(
            tenant_id=principal.tenant_id,
            request=request,
            policy=gateway.policy_for(principal),
            rate=gateway.rate_for(principal),
            idempotency_key=idempotency_key,
        )
    )
    notification = accepted.notification
    # Serialised here rather than by FastAPI, which would validate the model a second time.
    body = NotificationDetail.model_validate(notification).model_dump_json()
    if accepted.replayed:
        return Response(body, status.HTTP_200_OK, {"Idempotent-Replayed": "true"}, "application/json")
    _publish(gateway, [accepted])
    headers = _quota_headers([accepted])
    return Response(body, status.HTTP_202_ACCEPTED, headers, media_type="application/json")


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchResponse,
    responses={
        **ERROR_RESPONSES,
        413: {"description": "Body over the size limit"},
        422: {"description": "Invalid body, or (`all_or_nothing`) an item was refused: `errors` name them"},
        429: {"description": "`all_or_nothing`: items over their rate limit (and no other refusals)"},
        503: {"description": "Database unavailable; nothing was accepted"},
    },
)
def send_batch(batch: BatchRequest, principal: SenderDep, gateway: GatewayDep) -> Response:
    """Accept up to 1000 notifications in one transaction. `best_effort` accepts the valid ones and
    reports each refused item in its result; `all_or_nothing` accepts none if any is refused."""
    requests: dict[int, NotificationRequest] = {}
    refused: dict[int, ItemError] = {}
    for index, item in enumerate(batch.notifications):
        try:
            requests[index] = NotificationRequest.model_validate(item)
            if requests[index].digest is not None:
                raise InvalidInput(
                    "digest is not allowed in a batch: send digested notifications one by one",
                    location=("body", "digest"),
                )
            screen(requests[index], gateway.settings)
        except ValidationError as error:
            requests.pop(index, None)
            refused[index] = _invalid_item(index, [(e["loc"], e["msg"], e["type"]) for e in error.errors()])
        except InvalidInput as error:
            requests.pop(index, None)
            refused[index] = _refused_item(index, error)
    all_or_nothing = batch.mode is BatchMode.ALL_OR_NOTHING
    if all_or_nothing and refused:
        return _refused_batch(refused, total=len(batch.notifications))
    indexes = list(requests)
    try:
        with transaction(gateway.session_factory) as session:
            outcomes = accept_notifications(
                session,
                tenant_id=principal.tenant_id,
                requests=list(requests.values()),
                policy=gateway.policy_for(principal),
                rate=gateway.rate_for(principal),
                all_or_nothing=all_or_nothing,
                publish_grace=timedelta(seconds=gateway.settings.publish_grace_seconds),
            )
    except BatchRefused as refusal:
        errors = {indexes[at]: _refused_item(indexes[at], error) for at, error in refusal.errors.items()}
        return _refused_batch(errors, total=len(batch.notifications))
    accepted = [outcome for outcome in outcomes if isinstance(outcome, Accepted)]
    _publish(gateway, accepted)
    results = [BatchItemResult(index=index, error=error) for index, error in refused.items()]
    for index, outcome in zip(indexes, outcomes, strict=True):
        if isinstance(outcome, Accepted):
            notification = outcome.notification
            results.append(
                BatchItemResult(index=index, id=notification.id, status=Status(notification.status))
            )
        else:
            results.append(BatchItemResult(index=index, error=_refused_item(index, outcome)))
    results.sort(key=lambda result: result.index)
    body = BatchResponse(accepted=len(accepted), refused=len(results) - len(accepted), results=results)
    return Response(
        body.model_dump_json(), status.HTTP_202_ACCEPTED, _quota_headers(accepted), "application/json"
    )


def _collect(
    request: NotificationRequest, principal: Principal, gateway: Gateway, idempotency_key: str | None
) -> Response:
    """A send with `digest`: added to its digest, in a transaction of its own (it locks the digest)."""
    with transaction(gateway.session_factory) as session:
        digested = collect(
            session,
            tenant_id=principal.tenant_id,
            request=request,
            policy=gateway.policy_for(principal),
            rate=gateway.rate_for(principal),
            idempotency_key=idempotency_key,
        )
    body = digested.send.model_dump_json()
    if digested.replayed:
        return Response(body, status.HTTP_200_OK, {"Idempotent-Replayed": "true"}, "application/json")
    # Only the send that opened the window accepted a notification (and counted against the limit).
    opened = [digested.opened] if digested.opened is not None else []
    _publish(gateway, opened)
    return Response(body, status.HTTP_202_ACCEPTED, _quota_headers(opened), "application/json")


def _send_to_topic(
    request: NotificationRequest, principal: Principal, gateway: Gateway, idempotency_key: str | None
) -> Response:
    if idempotency_key is not None:
        raise InvalidInput(
            "Idempotency-Key is not supported with `topic`", location=("header", "idempotency-key")
        )
    with transaction(gateway.session_factory) as session:
        fanout = start_fanout(session, tenant_id=principal.tenant_id, request=request)
    body = TopicSendAccepted(topic=fanout.topic, fanout_id=fanout.id, recipients=fanout.recipients)
    return Response(body.model_dump_json(), status.HTTP_202_ACCEPTED, media_type="application/json")


def _publish(gateway: Gateway, accepted: list[Accepted]) -> None:
    """Hand what is due now to the after-commit publisher (what it cannot publish stays in the
    outbox for the sweep) and count the acceptances."""
    gateway.publisher.publish(
        [(item.outbox_id, item.notification) for item in accepted if item.outbox_id is not None]
    )
    for item in accepted:
        NOTIFICATIONS_ACCEPTED.labels(item.notification.channel, item.notification.priority).inc()


def _quota_headers(accepted: list[Accepted]) -> dict[str, str]:
    """RateLimit-* of the most constrained key among these sends (none when not rate-limited)."""
    quotas = [item.quota for item in accepted if item.quota is not None]
    if not quotas:
        return {}
    tightest = min(quotas, key=lambda quota: (quota.remaining, -quota.reset_seconds))
    return rate_limit_headers(
        limit=tightest.limit, remaining=tightest.remaining, reset_seconds=tightest.reset_seconds
    )


Loc = Sequence[str | int]


def _invalid_item(index: int, problems: list[tuple[Loc, str, str]]) -> ItemError:
    errors = [
        {"loc": ["body", "notifications", index, *loc], "msg": message, "type": kind}
        for loc, message, kind in problems
    ]
    detail = "; ".join(f"{'.'.join(map(str, loc)) or 'body'}: {message}" for loc, message, _ in problems)
    return ItemError(status=422, title=HTTPStatus.UNPROCESSABLE_ENTITY.phrase, detail=detail, errors=errors)


def _refused_item(index: int, error: PulseError) -> ItemError:
    if isinstance(error, RateLimited):
        return ItemError(
            status=429,
            title=HTTPStatus.TOO_MANY_REQUESTS.phrase,
            detail=str(error),
            errors=[{"loc": ["body", "notifications", index], "msg": str(error), "type": "rate_limited"}],
            retry_after=error.reset_seconds,
        )
    location = error.location[1:] if isinstance(error, InvalidInput) and error.location else ()
    return _invalid_item(index, [(location, str(error), "value_error")])


def _refused_batch(refused: dict[int, ItemError], *, total: int) -> Response:
    """all_or_nothing: nothing was accepted; 429 when only rate limits stood in the way."""
    items = [refused[index] for index in sorted(refused)]
    detail = f"{len(items)} of {total} notifications were refused; nothing was accepted (see `errors`)"
    errors = [error for item in items for error in item.errors]
    if all(item.status == 429 for item in items):
        retry_after = max(item.retry_after or 1 for item in items)
        return problem(429, detail, headers={"Retry-After": str(retry_after)}, errors=errors)
    return problem(422, detail, errors=errors)


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
        cancelled = cancel_notification(session, tenant_id=principal.tenant_id, id=notification_id)
        record_change(session, principal, "notification.cancel", "notification", notification_id)
        return NotificationDetail.model_validate(cancelled)


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
    """Send now, ignoring `send_at`, quiet hours or a retry's backoff; a digest's combined notification
    closes its window and is sent with what it collected so far."""
    with transaction(gateway.session_factory) as session:
        record_change(session, principal, "notification.force", "notification", notification_id)
        policy = gateway.policy_for(principal)
        if close_now(session, tenant_id=principal.tenant_id, id=notification_id, policy=policy):
            # Its publish is owed in the outbox: the scheduler's sweep sends it within a tick.
            return NotificationDetail.model_validate(
                get_notification(session, tenant_id=principal.tenant_id, id=notification_id)
            )
        outbox_id, notification = force_notification(
            session,
            tenant_id=principal.tenant_id,
            id=notification_id,
            publish_grace=timedelta(seconds=gateway.settings.publish_grace_seconds),
        )
    gateway.publisher.publish([(outbox_id, notification)])
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
    user_id: Annotated[str | None, Query(pattern=NO_NUL_CHARACTERS)] = None,
    priority: Priority | None = None,
    created_after: DateTimeInput | None = None,
    created_before: DateTimeInput | None = None,
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
