"""Push notifications over Firebase Cloud Messaging's HTTP v1 API
(`POST /v1/projects/{project}/messages:send`).

One pooled HTTP client per provider, shared by every worker thread. A request ends by
`PULSE_FCM_DEADLINE_SECONDS` and at most 64 KiB of an answer are read (pulse.channels.http.
BoundedClient), so an answer dripped by FCM or anything in between holds no worker past its claim
lease.

FCM answers 200 with the message name; a 5xx, the deadline, timeouts and connection errors are worth
trying again, a 429 is throttling (ProviderThrottled: it goes back without using an attempt). A
device token FCM reports as `UNREGISTERED` (404), or as the invalid argument of a 400
`INVALID_ARGUMENT`, will never work again: the provider raises a permanent error and reports the
token through `on_invalid_token`, which the push worker records for the tenant that sent to it
(pulse.recipients.push_tokens), so that the gateway refuses that tenant's further sends to it.

Authentication is an OAuth2 bearer token: a static one from settings (development, the sandbox),
or, when `PULSE_FCM_CREDENTIALS_FILE` names a service-account file, tokens minted and refreshed by
the optional `google-auth` package (`pip install google-auth`).
"""

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from pulse.channels.http import Answer, BoundedClient, json_object, retry_after_seconds
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, ProviderThrottled, TransientProviderError
from pulse.settings import FcmSettings

log = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

# Called with the tenant, the token and FCM's error code.
InvalidTokenCallback = Callable[[uuid.UUID, str, str], None]


class FcmProvider:
    def __init__(
        self,
        settings: FcmSettings,
        *,
        name: str = "fcm",
        on_invalid_token: InvalidTokenCallback | None = None,
    ) -> None:
        self.name = name
        self._on_invalid_token = on_invalid_token
        self._token = _token_source(settings)
        self._client = BoundedClient(
            deadline_seconds=settings.deadline_seconds,
            base_url=settings.base_url.rstrip("/"),
            timeout=settings.timeout_seconds,
            headers={"Accept": "application/json"},
        )
        self._path = f"/v1/projects/{settings.project_id}/messages:send"

    def send(self, claim: Claim) -> dict[str, Any]:
        try:
            response = self._client.post(
                self._path,
                json=fcm_message(claim.recipient, claim.content),
                headers={"Authorization": f"Bearer {self._token()}"},
            )
        except httpx.TransportError as error:  # the deadline, timeouts, refused or dropped connections
            raise TransientProviderError(f"FCM request failed: {error!r}") from error
        if response.is_success:
            return {"message_name": json_object(response).get("name")}
        refusal = classify_refusal(response)
        if isinstance(refusal, InvalidToken):
            self._report_invalid(claim.tenant_id, claim.recipient, refusal.reason)
        raise refusal

    def _report_invalid(self, tenant_id: uuid.UUID, token: str, reason: str) -> None:
        if self._on_invalid_token is None:
            return
        try:
            self._on_invalid_token(tenant_id, token, reason)
        except Exception:  # The send failed either way; a lost record only costs another attempt later.
            log.exception("could not record an invalid push token")

    def close(self) -> None:
        self._client.close()


def fcm_message(token: str, content: dict[str, Any]) -> dict[str, Any]:
    """The `messages:send` body: title (when there is a subject), body, and data as strings."""
    notification: dict[str, str] = {"body": content["body"]}
    if content.get("subject"):
        notification = {"title": content["subject"], **notification}
    message: dict[str, Any] = {"token": token, "notification": notification}
    if content.get("data"):
        # FCM's data is a map of strings: other JSON values travel as their JSON text.
        message["data"] = {
            key: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            for key, value in content["data"].items()
        }
    return {"message": message}


class InvalidToken(PermanentProviderError):
    """FCM said the device token itself is dead; `reason` is its error code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def classify_refusal(response: Answer) -> TransientProviderError | PermanentProviderError:
    """The error an FCM error answer stands for (FCM v1 REST error codes)."""
    error = json_object(response).get("error")
    error = error if isinstance(error, dict) else {}
    status = str(error.get("status") or "")
    codes = {status} | {
        str(detail.get("errorCode"))
        for detail in error.get("details") or []
        if isinstance(detail, dict) and detail.get("errorCode")
    }
    fcm_code = next((code for code in codes if code and code != status), status)
    message = f"FCM {response.status_code}"
    if error:
        message += f" ({fcm_code}): {error.get('message', '')}"
    else:
        message += f": {response.text[:200]}"
    if response.status_code == 429:
        return ProviderThrottled(message, retry_after=retry_after_seconds(response))
    if response.status_code >= 500:
        return TransientProviderError(message, retry_after=retry_after_seconds(response))
    if (response.status_code == 404 and "UNREGISTERED" in codes) or (
        response.status_code == 400 and "INVALID_ARGUMENT" in codes and _about_the_token(error)
    ):
        return InvalidToken(message, reason=fcm_code)
    return PermanentProviderError(message)


def _about_the_token(error: dict[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token rather than the message (a bad
    data value, say, answers the same code): FCM names the fields at fault in a BadRequest detail,
    and says so in words when it is the token ("The registration token is not a valid FCM
    registration token")."""
    fields = {
        str(violation.get("field"))
        for detail in error.get("details") or []
        if isinstance(detail, dict) and detail.get("@type") == _BAD_REQUEST
        for violation in detail.get("fieldViolations") or []
        if isinstance(violation, dict)
    }
    if fields:
        return "message.token" in fields
    return "registration token" in str(error.get("message", "")).lower()


def _token_source(settings: FcmSettings) -> Callable[[], str]:
    """A function giving the current bearer token."""
    if not settings.credentials_file:
        token = settings.access_token.get_secret_value()
        return lambda: token
    # Production: a service account; google-auth is optional, imported only when configured.
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    credentials = service_account.Credentials.from_service_account_file(
        settings.credentials_file, scopes=[FCM_SCOPE]
    )
    lock = threading.Lock()

    def current() -> str:
        with lock:
            if not credentials.valid:  # Expired or never fetched: refresh (a blocking HTTPS call).
                credentials.refresh(Request())
            return str(credentials.token)

    return current
