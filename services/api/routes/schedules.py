import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.db.models import Schedule
from pulse.notifications.acceptance import screen
from pulse.notifications.schemas import NotificationRequest
from pulse.schedules.service import (
    DEFAULT_HISTORY,
    PauseReason,
    create_schedule,
    delete_schedule,
    get_schedule_with_history,
    list_schedules,
    pause_schedule,
    resume_schedule,
)
from pulse.vocabulary import Status
from services.api.bodies import StrictJsonRoute
from services.api.deps import GatewayDep, ReaderDep, SenderDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/schedules", tags=["schedules"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)

NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No such schedule for this tenant"}}


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "cron": "0 9 * * MON",
                    "timezone": "Europe/Paris",
                    "notification": {
                        "channel": "email",
                        "recipient": "ada@example.com",
                        "content": {"subject": "Weekly report", "body": "Here is your week."},
                    },
                }
            ]
        },
    )

    cron: str = Field(
        max_length=120,
        description="Five fields (minute hour day month weekday), or six with seconds last; "
        "`@daily`-style shorthands too.",
    )
    timezone: str = Field(
        "UTC", max_length=64, description="IANA time zone whose wall clock `cron` is read on."
    )
    notification: NotificationRequest = Field(
        description="Sent at every run: a POST /v1/notifications body, without `send_at`."
    )


class ScheduleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    cron: str
    timezone: str = Field(description="IANA time zone of the cron expression.")
    notification: NotificationRequest = Field(description="What each run sends.")
    paused: bool = Field(description="A paused schedule does not run; resuming it skips the missed runs.")
    paused_reason: PauseReason | None = Field(
        description="Why it is paused: `requested` (POST …/pause), or `failures` (its runs failed "
        "`PULSE_SCHEDULER_PAUSE_AFTER_FAILURES` times in a row; see `last_error`). Null while it runs."
    )
    next_run_at: datetime = Field(
        description="When it runs next (UTC). A skipped local time (DST) runs when the gap ends; a "
        "repeated one runs once. While paused: when it would have run."
    )
    last_run_at: datetime | None = Field(description="When it last ran.")
    run_count: int = Field(description="How many notifications it has sent.")
    consecutive_failures: int = Field(
        description="Runs that failed or were refused since the last one that sent (or since it was "
        "resumed); rate-limited runs are not counted."
    )
    last_error: str | None = Field(
        description="Why its latest unsuccessful run did not send (refused, rate-limited or failed); it "
        "stays after later successful runs."
    )
    last_error_at: datetime | None = Field(description="When that run was.")
    created_at: datetime


class ScheduleRunOut(BaseModel):
    """A notification a schedule created."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="The notification's id (GET /v1/notifications/{id}).")
    status: Status
    created_at: datetime
    scheduled_for: datetime | None = Field(description="When it is held until (e.g. quiet hours), if it is.")


class ScheduleDetail(ScheduleOut):
    history: list[ScheduleRunOut] = Field(description="Its most recent notifications, newest first.")


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
    responses={413: {"description": "Body over the size limit"}},
)
def add_schedule(request: ScheduleRequest, principal: SenderDep, gateway: GatewayDep) -> ScheduleOut:
    """Send `notification` every time `cron` fires in `timezone`. The notification is screened as
    POST /v1/notifications screens a send (enabled channel, SSRF guard on webhook and callback URLs),
    and each run is accepted like a direct send, rate limit included. Runs missed while the scheduler
    was down are not replayed: at most one catch-up run, then the normal rhythm."""
    screen(request.notification, gateway.settings, at=("body", "notification"))
    with transaction(gateway.session_factory) as session:
        schedule = create_schedule(
            session,
            tenant_id=principal.tenant_id,
            cron=request.cron,
            timezone=request.timezone,
            notification=request.notification,
        )
        created = ScheduleOut.model_validate(schedule)
        record_change(session, principal, "schedule.create", "schedule", schedule.id, after=created)
    return created


@router.get("", response_model=SchedulePage)
def browse_schedules(
    principal: ReaderDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> SchedulePage:
    """This tenant's schedules, newest first; follow `next_cursor` for the next page."""
    rows, next_cursor = list_schedules(session, tenant_id=principal.tenant_id, limit=limit, cursor=cursor)
    return SchedulePage(items=[ScheduleOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get("/{schedule_id}", response_model=ScheduleDetail, responses=NOT_FOUND)
def read_schedule(
    schedule_id: uuid.UUID,
    principal: ReaderDep,
    session: SessionDep,
    history: Annotated[
        int, Query(ge=0, le=200, description="How many of its latest notifications to include.")
    ] = DEFAULT_HISTORY,
) -> ScheduleDetail:
    """One schedule with its most recent notifications."""
    found = get_schedule_with_history(session, tenant_id=principal.tenant_id, id=schedule_id, history=history)
    return ScheduleDetail.model_validate(
        {**_fields(found.schedule), "history": [ScheduleRunOut.model_validate(run) for run in found.history]}
    )


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def remove_schedule(schedule_id: uuid.UUID, principal: SenderDep, gateway: GatewayDep) -> Response:
    """Stop and remove it; the notifications it sent stay (no longer linked to it)."""
    with transaction(gateway.session_factory) as session:
        deleted = delete_schedule(session, tenant_id=principal.tenant_id, id=schedule_id)
        record_change(
            session,
            principal,
            "schedule.delete",
            "schedule",
            schedule_id,
            before=ScheduleOut.model_validate(deleted),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{schedule_id}/pause", response_model=ScheduleOut, responses=NOT_FOUND)
def pause_runs(schedule_id: uuid.UUID, principal: SenderDep, gateway: GatewayDep) -> ScheduleOut:
    """Stop running it until resumed (pausing a paused schedule changes nothing)."""
    with transaction(gateway.session_factory) as session:
        paused = ScheduleOut.model_validate(
            pause_schedule(session, tenant_id=principal.tenant_id, id=schedule_id)
        )
        record_change(session, principal, "schedule.pause", "schedule", schedule_id)
    return paused


@router.post("/{schedule_id}/resume", response_model=ScheduleOut, responses=NOT_FOUND)
def resume_runs(schedule_id: uuid.UUID, principal: SenderDep, gateway: GatewayDep) -> ScheduleOut:
    """Run it again from the next time `cron` fires after now; runs missed while paused are skipped.
    Its count of consecutive failures starts again from zero."""
    with transaction(gateway.session_factory) as session:
        resumed = ScheduleOut.model_validate(
            resume_schedule(session, tenant_id=principal.tenant_id, id=schedule_id)
        )
        record_change(session, principal, "schedule.resume", "schedule", schedule_id)
    return resumed


def _fields(schedule: Schedule) -> dict[str, object]:
    return {name: getattr(schedule, name) for name in ScheduleOut.model_fields}
