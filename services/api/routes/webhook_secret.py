"""The tenant's webhook signing secret (Standard Webhooks `whsec_…`), for verifying deliveries."""

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from pulse.audit.service import record_change
from pulse.db import transaction
from pulse.webhooks.secrets import get_secret, rotate_secret
from services.api.bodies import StrictJsonRoute
from services.api.deps import AdminDep, GatewayDep
from services.api.routes.notifications import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/webhook-secret", tags=["webhooks"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)


class WebhookSecret(BaseModel):
    secret: str = Field(
        description="`whsec_` + base64 key; verify deliveries with any Standard Webhooks library.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


@router.get("", response_model=WebhookSecret)
async def webhook_secret(principal: AdminDep, gateway: GatewayDep) -> WebhookSecret:
    """The secret webhook deliveries are signed with (created on first request)."""

    def read() -> str:
        with transaction(gateway.session_factory) as session:
            return get_secret(session, principal.tenant_id)

    return WebhookSecret(secret=await run_in_threadpool(read))


@router.post("/rotate", response_model=WebhookSecret)
async def rotate_webhook_secret(principal: AdminDep, gateway: GatewayDep) -> WebhookSecret:
    """Replace the secret; workers sign with the new one within `PULSE_WEBHOOK_SECRET_CACHE_SECONDS`.
    For `PULSE_WEBHOOK_SECRET_GRACE_HOURS` (24 h) deliveries and status callbacks carry a second
    signature, with the replaced secret (`webhook-signature: v1,<new> v1,<old>`), so receivers can
    switch secrets without refusing any; rotating again within that time ends the earlier grace."""

    def rotate() -> str:
        with transaction(gateway.session_factory) as session:
            secret = rotate_secret(session, principal.tenant_id)
            record_change(session, principal, "webhook_secret.rotate", "webhook_secret", principal.tenant_id)
            return secret

    return WebhookSecret(secret=await run_in_threadpool(rotate))
