"""ASGI middleware: request body limit, request timing, request ids, 405s."""

import json
import time
from collections.abc import Iterable
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pulse.observability.logging import REQUEST_ID_HEADER, new_request_id, request_id
from pulse.observability.metrics import HTTP_REQUEST_DURATION
from services.api.problems import problem


class BodySizeLimit:
    """Refuses bodies over `max_bytes` with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes and not refused:
                # Answer now and tell the app the client went away, so it stops reading; whatever
                # the app still sends is dropped below.
                refused = True
                await self._refuse(send)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"request bodies are limited to {self.max_bytes} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestTiming:
    """Observes pulse_http_request_duration_seconds, labelled by route template (not raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUEST_DURATION.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


class RequestId:
    """Gives every request an id (the caller's X-Request-ID, else a new one), echoes it back, and sets
    it for the request's log lines and the messages it publishes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        current = given if _acceptable(given) else new_request_id()
        token = request_id.set(current)

        async def echoing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", current.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, echoing_send)
        finally:
            request_id.reset(token)


def _acceptable(given: str) -> bool:
    # Echoed into headers and logs: short and printable only.
    return 0 < len(given) <= 128 and given.isprintable() and given.isascii()


class MethodNotAllowed:
    """A 405's `Allow` lists every method of the path: FastAPI's lists those of the first route
    matching it, while routes share paths (one per method). And a literal path comes before a
    template that also matches it, as in OpenAPI: GET /v1/notifications/batch is a 405 (the path has
    only POST), not the read of a notification whose id would be "batch"."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.routes = [route for route in routes if isinstance(route, Route)]
        templates = [route for route in self.routes if route.param_convertors]
        self.literal_paths = {
            route.path
            for route in self.routes
            if not route.param_convertors and any(t.path_regex.match(route.path) for t in templates)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in self.literal_paths and scope["method"] not in (allowed := self._allowed(path)):
            allow = ", ".join(allowed)
            await problem(405, "Method Not Allowed", headers={"Allow": allow})(scope, receive, send)
            return

        async def listing_send(message: Message) -> None:
            # Routes outside `routes` (the docs) keep their own 405.
            is_405 = message["type"] == "http.response.start" and message["status"] == 405
            if is_405 and (allowed := self._allowed(path)):
                headers = [(name, value) for name, value in message["headers"] if name != b"allow"]
                message["headers"] = [*headers, (b"allow", ", ".join(allowed).encode())]
            await send(message)

        await self.app(scope, receive, listing_send)

    def _allowed(self, path: str) -> list[str]:
        matching = [route for route in self.routes if route.path_regex.match(path)]
        if path in self.literal_paths:
            matching = [route for route in matching if route.path == path]
        return sorted({method for route in matching for method in route.methods or ()})


class EndUserCors:
    """CORS for the end-user routes only (tokens, inbox): a front end on another origin (say, the realtime
    service's demo page) calls them from the browser. The tenant routes stay same-origin."""

    PATHS = ("/v1/auth/token", "/v1/inbox")

    def __init__(self, app: ASGIApp, *, origins: Iterable[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", REQUEST_ID_HEADER],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.PATHS):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
