from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from pulse.analytics.schemas import AnalyticsSummary
from pulse.analytics.service import MAX_WINDOW, queue_depths_or_none, resolve_window, summarize
from pulse.inputs import DateTimeInput
from services.api.bodies import StrictJsonRoute
from services.api.deps import GatewayDep, ReaderDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/analytics", tags=["analytics"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)

SUMMARY_DESCRIPTION = f"""
Delivery statistics of this tenant's notifications created in [`since`, `until`), per channel;
per-minute throughput over the hour before `until`; and the depth of every `pulse.*` queue.

**The queue depths are deployment-wide, not per tenant**: all tenants share the queues. They are
null (not an error) when the broker cannot be reached.

The window may span at most {MAX_WINDOW.days} days; a reversed or longer window is refused with `422`.
"""


@router.get(
    "/summary",
    response_model=AnalyticsSummary,
    summary="Delivery statistics, throughput and queue depths",
    description=SUMMARY_DESCRIPTION,
)
def analytics_summary(
    principal: ReaderDep,
    session: SessionDep,
    gateway: GatewayDep,
    since: Annotated[
        DateTimeInput | None,
        Query(description="Start of the window (ISO 8601; naive means UTC). Default: 24 h before `until`."),
    ] = None,
    until: Annotated[
        DateTimeInput | None,
        Query(description="End of the window, exclusive (ISO 8601; naive means UTC). Default: now."),
    ] = None,
) -> AnalyticsSummary:
    window = resolve_window(since=since, until=until, now=datetime.now(UTC))
    with gateway.celery.connection_for_write() as connection:
        queues = queue_depths_or_none(
            connection, connect_timeout=gateway.settings.broker.connect_timeout_seconds
        )
    return summarize(session, tenant_id=principal.tenant_id, window=window, queues=queues)
