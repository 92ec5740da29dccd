"""Twilio-style Messages API: `POST /2010-04-01/Accounts/{sid}/Messages.json`, form-encoded.

Accepts any credentials whose user is the account SID in the path, as a stand-in for Twilio's own
check; answers and errors have Twilio's JSON shape, so a real Twilio client library works against it.
"""

import asyncio
import base64
import binascii
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pulse.channels.sms import sms_segments
from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore, new_message

WHATSAPP_PREFIX = "whatsapp:"

# Twilio's error codes for the answers the sandbox gives (https://www.twilio.com/docs/api/errors).
_ERRORS = {
    400: (21211, "The 'To' number is not a valid phone number."),
    401: (20003, "Authenticate"),
    404: (20404, "The requested resource was not found"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


def twilio_error(
    status: int, code: int | None = None, message: str | None = None, *, retry_after: int = 1
) -> JSONResponse:
    default_code, default_message = _ERRORS.get(status, (status * 100, "Sandbox: injected failure"))
    content = {
        "code": code or default_code,
        "message": message or default_message,
        "more_info": f"https://www.twilio.com/docs/errors/{code or default_code}",
        "status": status,
    }
    # Throttling answers say when to come back, as Twilio's do.
    headers = {"Retry-After": str(retry_after)} if status == 429 else None
    return JSONResponse(content, status_code=status, headers=headers)


def create_twilio_router(store: MessageStore, faults: FaultInjector) -> APIRouter:
    router = APIRouter(tags=["twilio"])

    @router.post("/2010-04-01/Accounts/{account_sid}/Messages.json", response_model=None)
    async def create_message(account_sid: str, request: Request) -> JSONResponse:
        if _basic_auth_user(request) != account_sid:
            return twilio_error(401)
        form = dict(parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True))
        to, body = form.get("To", ""), form.get("Body", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")

        delay_seconds, status, retry_after = faults.decide("twilio", account=account_sid)
        if delay_seconds:
            await asyncio.sleep(delay_seconds)
        if status is not None:
            return twilio_error(status, retry_after=retry_after)

        channel = "whatsapp" if to.startswith(WHATSAPP_PREFIX) else "sms"
        store.add(
            new_message(
                channel=channel,
                provider="twilio",
                recipient=to.removeprefix(WHATSAPP_PREFIX),
                subject="",
                body=body,
                headers={**form, "AccountSid": account_sid},
            ),
            identity=None,  # Twilio has no idempotency key: a repeated request is a second message.
        )
        return JSONResponse(_message_resource(account_sid, form), status_code=201)

    return router


def _basic_auth_user(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, separator, _password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if separator and user else None


def _message_resource(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
    sid = "SM" + secrets.token_hex(16)
    now = format_datetime(datetime.now(UTC), usegmt=True)
    _encoding, segments = sms_segments(form["Body"])
    return {
        "sid": sid,
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "to": form["To"],
        "from": form.get("From"),
        "body": form["Body"],
        "status": "queued",
        "direction": "outbound-api",
        "num_segments": str(segments),
        "num_media": "0",
        "date_created": now,
        "date_updated": now,
        "date_sent": None,
        "error_code": None,
        "error_message": None,
        "price": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }
