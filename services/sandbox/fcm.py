"""FCM HTTP v1-style send API: `POST /v1/projects/{project}/messages:send`, JSON.

Accepts any bearer token, as a stand-in for Google's OAuth2 check; answers and errors have FCM's
JSON shape. Device tokens starting with `invalid-` are answered like unregistered ones (404
`UNREGISTERED`), so that tests can produce a dead token on purpose.
"""

import asyncio
import json
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore, new_message

UNREGISTERED_PREFIX = "invalid-"

# google.rpc status names of the HTTP answers the sandbox gives.
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# FCM's own error codes (the FcmError detail) for them.
_FCM_CODES = {
    400: "INVALID_ARGUMENT",
    401: "THIRD_PARTY_AUTH_ERROR",
    403: "SENDER_ID_MISMATCH",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def fcm_error(status: int, message: str | None = None, *, retry_after: int = 1) -> JSONResponse:
    error: dict[str, Any] = {
        "code": status,
        "message": message or "Sandbox: injected failure",
        "status": _STATUSES.get(status, "UNKNOWN"),
    }
    if status in _FCM_CODES and status != 401:
        error["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": _FCM_CODES[status]}
        ]
    # Throttling and unavailability answers say when to come back, as FCM's do.
    headers = {"Retry-After": str(retry_after)} if status in (429, 503) else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def create_fcm_router(store: MessageStore, faults: FaultInjector) -> APIRouter:
    router = APIRouter(tags=["fcm"])

    @router.post("/v1/projects/{project}/messages:send", response_model=None)
    async def send(project: str, request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return fcm_error(
                401,
                "Request is missing required authentication credential. "
                "Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return fcm_error(400, "Invalid JSON payload received.")
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("token"), str) or not message["token"]:
            return fcm_error(400, "Recipient of the message is not set.")
        device_token: str = message["token"]
        if device_token.startswith(UNREGISTERED_PREFIX):
            return fcm_error(404, "Requested entity was not found.")

        delay_seconds, status, retry_after = faults.decide("fcm", account=project)
        if delay_seconds:
            await asyncio.sleep(delay_seconds)
        if status is not None:
            return fcm_error(status, retry_after=retry_after)

        notification = message.get("notification") or {}
        data = message.get("data") or {}
        if not isinstance(notification, dict) or not isinstance(data, dict):
            return fcm_error(400, "Invalid value at 'message.notification' or 'message.data'.")
        name = f"projects/{project}/messages/{secrets.token_hex(8)}"
        store.add(
            new_message(
                channel="push",
                provider="fcm",
                recipient=device_token,
                subject=str(notification.get("title") or ""),
                body=str(notification.get("body") or ""),
                headers={str(key): str(value) for key, value in data.items()},
            ),
            identity=None,  # FCM has no idempotency key: a repeated request is a second message.
        )
        return JSONResponse({"name": name})

    return router
