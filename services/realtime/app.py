"""The realtime service's app factory. Run with `python -m services.realtime`."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pulse.db import make_engine, make_session_factory
from services.realtime.endpoint import router as websocket_router
from services.realtime.fanout import Fanout
from services.realtime.hub import Hub
from services.realtime.settings import RealtimeSettings
from services.realtime.state import Realtime

log = logging.getLogger(__name__)
_STATIC = files("services.realtime").joinpath("static")
DEMO_PAGE = _STATIC.joinpath("demo.html").read_text(encoding="utf-8")
DEMO_SCRIPT = _STATIC.joinpath("demo.js").read_text(encoding="utf-8")
DEMO_STYLE = _STATIC.joinpath("demo.css").read_text(encoding="utf-8")
# The demo talks to whichever gateway the visitor names, and to this service's WebSocket.
DEMO_HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self' http: https: ws: wss:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    ),
    "X-Content-Type-Options": "nosniff",
}


def create_app(settings: RealtimeSettings | None = None) -> FastAPI:
    settings = settings or RealtimeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database)
        hub = Hub()
        realtime = Realtime(settings=settings, session_factory=make_session_factory(engine), hub=hub)
        hub.fanout = Fanout(
            settings.broker.url,
            f"pulse.realtime.{realtime.process_id}",
            deliver=hub.deliver,
            held_keys=hub.held_keys,
        )
        await hub.fanout.start()
        app.state.realtime = realtime
        heartbeat = asyncio.create_task(realtime.keep_alive())
        log.info("realtime up on port %d (process %s)", settings.port, realtime.process_id)
        yield
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        await hub.fanout.close()
        engine.dispose()

    app = FastAPI(
        title="Pulse realtime",
        version="0.1.0",
        lifespan=lifespan,
        # Nothing here for an OpenAPI document: the WebSocket is described in the README.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(websocket_router)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/demo", include_in_schema=False)
    async def demo() -> HTMLResponse:
        return HTMLResponse(DEMO_PAGE, headers=DEMO_HEADERS)

    @app.get("/demo.js", include_in_schema=False)
    async def demo_script() -> Response:
        return Response(DEMO_SCRIPT, media_type="text/javascript", headers=DEMO_HEADERS)

    @app.get("/demo.css", include_in_schema=False)
    async def demo_style() -> Response:
        return Response(DEMO_STYLE, media_type="text/css", headers=DEMO_HEADERS)

    return app
