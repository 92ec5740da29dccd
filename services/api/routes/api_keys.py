"""A tenant's API keys: issue, list (never the secrets) and revoke."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.errors import Forbidden
from pulse.tenants.schemas import ApiKeyCreated, ApiKeyOut, ApiKeyPage, ApiKeyRequest
from pulse.tenants.service import MAX_ACTIVE_KEYS, api_key_page, issue_api_key, revoke_api_key_by_id
from services.api.bodies import StrictJsonRoute
from services.api.deps import AdminDep, GatewayDep, SessionDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/api-keys", tags=["api keys"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses={
        403: {"description": "The key lacks the admin scope, or a scope it asks to grant"},
        409: {"description": f"The tenant already has {MAX_ACTIVE_KEYS} active keys"},
    },
)
def create_key(request: ApiKeyRequest, principal: AdminDep, gateway: GatewayDep) -> ApiKeyCreated:
    """Issue a key for this tenant. The response is the only time the key itself is shown: only its
    hash is stored. A key can only grant scopes it holds."""
    if missing := sorted(set(request.scopes) - principal.scopes):
        named = ", ".join(f"`{scope}`" for scope in missing)
        raise Forbidden(f"this API key cannot grant scopes it lacks: {named}")
    with transaction(gateway.session_factory) as session:
        key, row = issue_api_key(
            session,
            tenant_id=principal.tenant_id,
            scopes=request.scopes,
            name=request.name,
            expires_at=request.expires_at,
        )
        created = ApiKeyOut.model_validate(row)
        record_change(session, principal, "api_key.create", "api_key", row.id, after=created)
    return ApiKeyCreated(**created.model_dump(), key=key)


@router.get("", response_model=ApiKeyPage)
def list_keys(
    principal: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ApiKeyPage:
    """This tenant's keys, revoked and expired ones too, newest first; never the keys themselves."""
    rows, next_cursor = api_key_page(session, tenant_id=principal.tenant_id, limit=limit, cursor=cursor)
    return ApiKeyPage(items=[ApiKeyOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such active key for this tenant"}},
)
def revoke_key(key_id: uuid.UUID, principal: AdminDep, gateway: GatewayDep) -> Response:
    """Revoke the key: every gateway refuses it within `PULSE_AUTH_CACHE_SECONDS` (at most 5 s). It
    stays listed, with `revoked_at`. A key may revoke itself."""
    with transaction(gateway.session_factory) as session:
        revoked = revoke_api_key_by_id(session, tenant_id=principal.tenant_id, key_id=key_id)
        record_change(
            session, principal, "api_key.revoke", "api_key", key_id, after=ApiKeyOut.model_validate(revoked)
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
