"""Webhook receiver: `POST /webhooks/{path}` stores whatever Pulse delivers there.

Each delivery is stored as a message of channel `webhook` whose recipient is the URL path
(`/webhooks/orders`), body the raw JSON text and headers the request's (`webhook-id`,
`webhook-timestamp`, `webhook-signature`, ...). Like a real consumer it keeps one copy per
`webhook-id` and counts repeats. Faults of endpoint `webhook` apply (status and latency; a 429 says
`Retry-After: <the fault's retry_after>`; `account` is the path after `/webhooks/`; `answer` makes
answers misbehave the ways a hostile receiver can: dripped, falsely gzip-labelled, a gzip bomb, huge).
Once a test registers the tenant's secret (`POST /api/webhook-secret`), every delivery's signature is
checked with the Standard Webhooks library and the result stored as header `verified` (`"true"` or
`"false"`).
"""

import asyncio
import functools
import threading
import zlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.sandbox.faults import FaultInjector, Misbehaviour
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


_MIB = 1024 * 1024


@functools.cache
def _gzip_bomb() -> bytes:
    """32 KiB of gzip that inflate to 32 MiB of zeros."""
    compressor, zeros = zlib.compressobj(9, wbits=31), bytes(_MIB)
    return b"".join(compressor.compress(zeros) for _ in range(32)) + compressor.flush()


async def _dripped() -> AsyncIterator[bytes]:
    for _ in range(100):
        yield b"."
        await asyncio.sleep(0.2)


async def _huge() -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    for _ in range(256):
        yield chunk


def _answer(status: int, text: str, misbehaviour: Misbehaviour | None, *, retry_after: int = 1) -> Response:
    headers = {"Retry-After": str(retry_after)} if status == 429 else {}
    if misbehaviour == "drip":
        return StreamingResponse(_dripped(), status_code=status, headers=headers)
    if misbehaviour == "huge":
        return StreamingResponse(_huge(), status_code=status, headers=headers)
    if misbehaviour == "bad-gzip":
        return Response(
            b"this is not gzip", status_code=status, headers={**headers, "Content-Encoding": "gzip"}
        )
    if misbehaviour == "gzip-bomb":
        return Response(_gzip_bomb(), status_code=status, headers={**headers, "Content-Encoding": "gzip"})
    return Response(text, status_code=status, headers=headers)


def create_webhook_router(store: MessageStore, faults: FaultInjector) -> APIRouter:
    router = APIRouter(tags=["webhooks"])
    secret = _Secret()

    @router.post("/webhooks/{path:path}", response_model=None)
    async def receive(path: str, request: Request) -> Response:
        delay_seconds, status, retry_after = faults.decide("webhook", account=path)
        misbehaviour = faults.misbehaviour("webhook", account=path)
        if delay_seconds:
            await asyncio.sleep(delay_seconds)
        if status is not None:
            return _answer(status, f"sandbox: injected {status}", misbehaviour, retry_after=retry_after)
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
        return _answer(200, "", misbehaviour)

    @router.post("/api/webhook-secret")
    async def register_secret(body: WebhookSecret) -> WebhookSecret:
        secret.set(body.secret)
        return body

    return router
