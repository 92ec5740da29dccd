"""The tenant's audit log: every change to its configuration, newest first."""

from typing import Annotated

from fastapi import APIRouter, Query

from pulse.audit.schemas import AuditEntryOut, AuditPage
from pulse.audit.service import AuditFilters, list_entries
from pulse.text import NO_NUL_CHARACTERS
from services.api.bodies import StrictJsonRoute
from services.api.deps import AdminDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/audit-log", tags=["audit log"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)

Filter = Annotated[str | None, Query(max_length=255, pattern=NO_NUL_CHARACTERS)]


@router.get("", response_model=AuditPage)
def audit_log(
    principal: AdminDep,
    session: SessionDep,
    action: Filter = None,
    object_type: Filter = None,
    object_id: Filter = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> AuditPage:
    """Who (`actor`: an API key's id, or `cli`) changed what (templates, schedules, recipients, API
    keys, the webhook secret, replays, cancellations, tenant settings) and when, newest first; follow
    `next_cursor` for the next page. Filters match exactly, e.g. `action=template.update`,
    `object_type=template&object_id=welcome`. Entries are kept `PULSE_AUDIT_RETENTION_DAYS` (365)."""
    filters = AuditFilters(action=action, object_type=object_type, object_id=object_id)
    rows, next_cursor = list_entries(
        session, tenant_id=principal.tenant_id, filters=filters, limit=limit, cursor=cursor
    )
    return AuditPage(items=[AuditEntryOut.model_validate(row) for row in rows], next_cursor=next_cursor)
