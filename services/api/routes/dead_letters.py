import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.dead_letters.service import MAX_BULK_REPLAY, ReplaySelection, list_dead_letters, replay, replay_one
from pulse.inputs import DateTimeInput
from pulse.notifications.schemas import NotificationDetail
from pulse.notifications.service import get_notification
from pulse.vocabulary import Channel
from services.api.bodies import StrictJsonRoute
from services.api.deps import AdminDep, GatewayDep, ReaderDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/dead-letters", tags=["dead letters"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)


class DeadLetterPage(BaseModel):
    items: list[NotificationDetail]


class BulkReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    since: DateTimeInput | None = Field(None, description="Failed at or after (ISO 8601; naive means UTC).")
    until: DateTimeInput | None = Field(None, description="Failed before (ISO 8601; naive means UTC).")


class BulkReplayResult(BaseModel):
    replayed: int = Field(description=f"How many were re-queued (at most {MAX_BULK_REPLAY} per call).")
    ids: list[uuid.UUID]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@router.get("", response_model=DeadLetterPage)
def dead_letters(
    principal: ReaderDep,
    session: SessionDep,
    channel: Channel | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeadLetterPage:
    """Failed notifications, most recent failure first, with their last error and attempts."""
    rows = list_dead_letters(session, tenant_id=principal.tenant_id, channel=channel, limit=limit)
    return DeadLetterPage(items=[NotificationDetail.model_validate(row) for row in rows])


@router.post("/replay", status_code=status.HTTP_202_ACCEPTED, response_model=BulkReplayResult)
def replay_many(request: BulkReplayRequest, principal: AdminDep, gateway: GatewayDep) -> BulkReplayResult:
    """Re-queue this channel's failed notifications (optionally those failed in a time range), each
    with a fresh attempt budget; their attempt history is kept."""
    selection = ReplaySelection(
        tenant_id=principal.tenant_id,
        channel=request.channel,
        failed_since=_utc(request.since),
        failed_before=_utc(request.until),
    )
    with transaction(gateway.session_factory) as session:
        ids = replay(session, selection)
        record_change(
            session,
            principal,
            "dead_letter.replay_bulk",
            "dead_letters",
            request.channel,
            after={**request.model_dump(), "replayed": len(ids)},
        )
    return BulkReplayResult(replayed=len(ids), ids=ids)


@router.post(
    "/{notification_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationDetail,
    responses={404: {"description": "No such notification"}, 409: {"description": "Not failed"}},
)
def replay_single(notification_id: uuid.UUID, principal: AdminDep, gateway: GatewayDep) -> NotificationDetail:
    """Re-queue one failed notification with a fresh attempt budget; its attempt history is kept."""
    with transaction(gateway.session_factory) as session:
        replay_one(session, tenant_id=principal.tenant_id, notification_id=notification_id)
        record_change(session, principal, "dead_letter.replay", "notification", notification_id)
        return NotificationDetail.model_validate(
            get_notification(session, tenant_id=principal.tenant_id, id=notification_id)
        )
