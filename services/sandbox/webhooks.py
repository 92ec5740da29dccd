"""Webhook receiver: `POST /webhooks/{path}` stores whatever Pulse delivers there.

Each delivery is stored as a message of channel `webhook` whose recipient is the URL path
(`/webhooks/orders`), body the raw JSON text and headers the request's (`webhook-id`,
`webhook-timestamp`, `webhook-signature`, ...). Like a real consumer it keeps one copy per
`webhook-id` and counts repeats. Faults of endpoint `webhook` apply (status and latency; a 429 says
`Retry-After: 1`). Once a test registers the tenant's secret (`POST /api/webhook-secret`), every
delivery's signature is checked with the Standard Webhooks library and the result stored as header
`verified` (`"true"` or `"false"`).
"""

import asyncio
import threading

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore, new_message


class WebhookSecret(BaseModel):
    secret: str | None = Field(
        description="The `whsec_…` secret deliveries are verified with; null stops verifying."
    )


class _Secret:
    def __init__(self) -> None:
        self._value: str | None = None
        self._lock = threading.Lock()

    def get(self) -> str | None:
        with self._lock:
            return self._value

    def set(self, value: str | None) -> None:
        with self._lock:
            self._value = value


def verify(secret: str, body: str, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError):
        return False
    return True


def create_webhook_router(store: MessageStore, faults: FaultInjector) -> APIRouter:
    router = APIRouter(tags=["webhooks"])
    secret = _Secret()

    @router.post("/webhooks/{path:path}", response_model=None)
    async def receive(path: str, request: Request) -> Response:
        delay_seconds, status = faults.decide("webhook")
        if delay_seconds:
            await asyncio.sleep(delay_seconds)
        if status is not None:
            headers = {"Retry-After": "1"} if status == 429 else None
            return Response(f"sandbox: injected {status}", status_code=status, headers=headers)
        body = (await request.body()).decode(errors="replace")
        headers = {name.lower(): value for name, value in request.headers.items()}
        if (registered := secret.get()) is not None:
            headers["verified"] = "true" if verify(registered, body, headers) else "false"
        store.add(
            new_message(
                channel="webhook",
                provider="webhook",
                recipient=f"/webhooks/{path}",
                subject="",
                body=body,
                headers=headers,
            ),
            identity=f"webhook:{headers['webhook-id']}" if "webhook-id" in headers else None,
        )
        return Response(status_code=200)

    @router.post("/api/webhook-secret")
    async def register_secret(body: WebhookSecret) -> WebhookSecret:
        secret.set(body.secret)
        return body

    return router
