from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from starlette.convertors import PathConvertor, register_url_convertor

from pulse.addresses import MAX_USER_ID
from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.recipients.schemas import RecipientIn, RecipientOut
from pulse.recipients.service import delete_recipient, find_recipients, get_recipient, put_recipient
from pulse.text import NO_NUL_CHARACTERS
from services.api.bodies import StrictJsonRoute
from services.api.deps import GatewayDep, ReaderDep, SenderDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/recipients", tags=["recipients"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)

NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No profile for this user id"}}


class _AnyText(PathConvertor):
    """As `:path`, line breaks included."""

    regex = "(?s:.*)"


register_url_convertor("any_text", _AnyText())

# `:any_text` so that any user id a send accepts (up to 255 characters, `/` and line breaks included)
# can have a profile.
UserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_USER_ID,
        pattern=NO_NUL_CHARACTERS,
        description="Your id of the end user, as given in `user_id` when sending.",
    ),
]


@router.put(
    "/{user_id:any_text}",
    response_model=RecipientOut,
    responses={
        201: {"description": "The profile was created", "model": RecipientOut},
        200: {"description": "The profile was replaced"},
        413: {"description": "Body over the size limit"},
    },
)
def save_recipient(
    user_id: UserId, profile: RecipientIn, principal: SenderDep, gateway: GatewayDep, response: Response
) -> RecipientOut:
    """Create or replace the end user's profile. The body is the whole profile: a field left out is
    cleared (set to null, or emptied). Sends that give `user_id` without `recipient` are then
    addressed from it, refused with 422 on a channel the user opted out of (unless `critical`), and
    held by its time zone and quiet hours instead of the tenant's."""
    with transaction(gateway.session_factory) as session:
        before = find_recipients(session, principal.tenant_id, [user_id]).get(user_id)
        before_out = None if before is None else RecipientOut.model_validate(before)
        recipient, created = put_recipient(
            session, tenant_id=principal.tenant_id, user_id=user_id, profile=profile
        )
        saved = RecipientOut.model_validate(recipient)
        action = "recipient.create" if created else "recipient.update"
        record_change(session, principal, action, "recipient", user_id, before=before_out, after=saved)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return saved


@router.get("/{user_id:any_text}", response_model=RecipientOut, responses=NOT_FOUND)
def read_recipient(user_id: UserId, principal: ReaderDep, session: SessionDep) -> RecipientOut:
    """The end user's profile."""
    return RecipientOut.model_validate(get_recipient(session, tenant_id=principal.tenant_id, user_id=user_id))


@router.delete("/{user_id:any_text}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def remove_recipient(user_id: UserId, principal: SenderDep, gateway: GatewayDep) -> Response:
    """Forget the end user's profile; sends naming them must then give `recipient` again. Their
    notifications stay."""
    with transaction(gateway.session_factory) as session:
        deleted = delete_recipient(session, tenant_id=principal.tenant_id, user_id=user_id)
        record_change(
            session,
            principal,
            "recipient.delete",
            "recipient",
            user_id,
            before=RecipientOut.model_validate(deleted),
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
