from datetime import timedelta

from fastapi import APIRouter

from pulse.inapp.tokens import EndUser
from pulse.realtime.connections import Presence, presence
from services.api.deps import GatewayDep, ReaderDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES
from services.api.routes.recipients import UserId

router = APIRouter(prefix="/v1/presence", tags=["in-app"], responses=ERROR_RESPONSES)


@router.get("/{user_id:any_text}", response_model=Presence)
def read_presence(
    user_id: UserId, principal: ReaderDep, session: SessionDep, gateway: GatewayDep
) -> Presence:
    """Whether the user has open realtime connections (on any realtime process), how many, and when a
    connection of theirs was last known alive. A process that died stops counting within
    `PULSE_REALTIME_STALE_AFTER_SECONDS`."""
    end_user = EndUser(tenant_id=principal.tenant_id, user_id=user_id)
    stale_after = timedelta(seconds=gateway.settings.presence.stale_after_seconds)
    return presence(session, end_user, stale_after=stale_after)
