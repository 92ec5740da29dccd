"""HTTP side of the sandbox: inbox page, message JSON API and fault injection control."""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from services.sandbox.faults import Fault, FaultInjector
from services.sandbox.fcm import create_fcm_router
from services.sandbox.store import Message, MessageStore
from services.sandbox.twilio import create_twilio_router
from services.sandbox.webhooks import create_webhook_router

MAX_LIMIT = 10_000


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(store: MessageStore, faults: FaultInjector, lifespan: Lifespan | None = None) -> FastAPI:
    """Build the HTTP app; ``lifespan`` lets the runner tie other endpoints (SMTP) to the server's life."""
    app = FastAPI(
        title="Pulse sandbox",
        description="Local stand-in for external notification providers.",
        lifespan=lifespan,
    )
    app.include_router(create_twilio_router(store, faults))
    app.include_router(create_webhook_router(store, faults))
    app.include_router(create_fcm_router(store, faults))
    inbox_html = files("services.sandbox").joinpath("inbox.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def inbox() -> str:
        return inbox_html

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Sync on purpose: filtering may scan the whole store, so it runs in the threadpool, off the event loop.
    @app.get("/api/messages")
    def list_messages(
        channel: str | None = None,
        recipient: str | None = None,
        q: Annotated[str | None, Query(description="Case-insensitive substring of subject or body.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> dict[str, Any]:
        # Empty query parameters (an untouched UI filter) mean "no filter".
        items, total = store.search(
            channel=channel or None, recipient=recipient or None, q=q or None, limit=limit
        )
        return {"items": items, "total": total}

    # Declared before /api/messages/{message_id} so that "count" is not taken for an id.
    @app.get("/api/messages/count")
    async def count_messages(channel: str | None = None, recipient: str | None = None) -> dict[str, int]:
        return {"count": store.count(channel=channel or None, recipient=recipient or None)}

    @app.get("/api/messages/{message_id}", response_model=None)  # pydantic rejects typing.TypedDict on 3.11
    async def get_message(message_id: str) -> Message:
        message = store.get(message_id)
        if message is None:
            raise HTTPException(status_code=404, detail="message not found")
        return message

    @app.delete("/api/messages")
    async def delete_messages() -> dict[str, int]:
        return {"deleted": store.clear()}

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        return {"total": store.count(), "by_channel": store.by_channel(), "repeats": store.repeats}

    # Without `account` when unset, so faults read back exactly as they were posted.
    @app.post("/api/faults", response_model_exclude_none=True)
    async def set_fault(fault: Fault) -> Fault:
        faults.set_fault(fault)
        return fault

    @app.get("/api/faults", response_model_exclude_none=True)
    async def list_faults() -> dict[str, list[Fault]]:
        return {"items": faults.active()}

    @app.delete("/api/faults")
    async def clear_faults() -> dict[str, int]:
        return {"deleted": faults.clear()}

    return app
