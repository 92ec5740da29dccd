"""Webhooks: a signed JSON POST to the recipient URL, per Standard Webhooks (https://www.standardwebhooks.com).

Body: `{"type": "notification", "id": <notification id>, "timestamp": <created_at>, "data": {"subject",
"body", "data"}}`; a status callback (pulse.callbacks) sends its stored event instead. Headers
`webhook-id` (the notification id: the same on every retry, so receivers can drop repeats),
`webhook-timestamp` (this attempt, Unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256
of "<id>.<timestamp>.<body>">` under the tenant's `whsec_` secret; for `PULSE_WEBHOOK_SECRET_GRACE_HOURS`
after a rotation, a second one under the previous secret follows, space-separated).

Every URL passes the SSRF guard (pulse.webhooks.ssrf) right before the request, and the request goes
to the address that was checked (the Host header and TLS server name stay the URL's), so a name that
re-resolves to a private address between the check and the connection (DNS rebinding) gains nothing.
Redirects are not followed: a 3xx is the receiver's answer, and a permanent failure.

Receivers are the tenants' to choose, so none may hold a worker up: a request ends by
`PULSE_WEBHOOK_DEADLINE_SECONDS` and at most 64 KiB of an answer are read (pulse.channels.http.
BoundedClient; the body only ever shows in an error message); each (tenant, receiver host) has its
own circuit breaker (`circuit_key`), and the tenant's secret is read by `prepare`, before a breaker is
involved.

2xx is delivered (whatever its body); 408, 425, 5xx, timeouts and connection errors are worth trying
again (Retry-After honoured); a 429 is throttling (ProviderThrottled: it goes back after its
Retry-After without using an attempt); 410 Gone and every other 4xx are permanent.
"""

import ipaddress
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from threading import Lock
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from pulse.channels.http import Answer, BoundedClient, retry_after_seconds
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, ProviderThrottled, TransientProviderError
from pulse.settings import WebhookSettings
from pulse.webhooks.secrets import SigningSecrets
from pulse.webhooks.signing import signed_headers
from pulse.webhooks.ssrf import Allowlist, IPAddress, RefusedUrl, check_url, split_url

USER_AGENT = "Pulse-Webhooks/1"
_TRANSIENT_STATUSES = frozenset({408, 425})


def webhook_payload(claim: Claim) -> str:
    """The JSON body of a notification's webhook: the same bytes on every attempt."""
    content = claim.content
    if claim.callback_for is not None:
        body: str = content["body"]  # the event, serialised when the callback was owed
        return body
    return json.dumps(
        {
            "type": "notification",
            "id": str(claim.notification_id),
            "timestamp": claim.created_at.astimezone(UTC).isoformat(),
            "data": {
                "subject": content.get("subject"),
                "body": content.get("body"),
                "data": content.get("data"),
            },
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


class SecretCache:
    """Tenants' signing secrets, remembered for `ttl_seconds` (thread-safe)."""

    def __init__(self, load: Callable[[uuid.UUID], SigningSecrets], ttl_seconds: float) -> None:
        self._load = load
        self._ttl = ttl_seconds
        self._entries: dict[uuid.UUID, tuple[float, SigningSecrets]] = {}
        self._lock = Lock()

    def __call__(self, tenant_id: uuid.UUID) -> SigningSecrets:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(tenant_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        secret = self._load(tenant_id)
        with self._lock:
            self._entries[tenant_id] = (now + self._ttl, secret)
        return secret


class WebhookProvider:
    def __init__(
        self,
        settings: WebhookSettings,
        secret_for: Callable[[uuid.UUID], SigningSecrets],
        *,
        name: str = "webhook",
        resolver: Callable[[str, int], list[IPAddress]] | None = None,
    ) -> None:
        self.name = name
        self._secret_for = secret_for
        self._grace = timedelta(hours=settings.secret_grace_hours)
        self._allowlist = Allowlist.parse(settings.allowlist)
        self._resolver = resolver
        self._client = BoundedClient(
            deadline_seconds=settings.deadline_seconds,
            timeout=httpx.Timeout(
                settings.read_timeout_seconds,
                connect=settings.connect_timeout_seconds,
            ),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        )

    def circuit_key(self, claim: Claim) -> str:
        """Whose circuit breaker a send goes through: the tenant's, for the receiver's host and port.
        One receiver failing says nothing about another's, nor about another tenant's."""
        return f"{claim.tenant_id} {self.destination(claim)}"

    def destination(self, claim: Claim) -> str:
        """The receiver's `host:port` (what a per-host send-rate limit applies to)."""
        try:
            _scheme, host, port = split_url(claim.recipient)
        except RefusedUrl:
            return claim.recipient  # refused by `prepare` anyway
        return f"{host.lower()}:{port}"

    def prepare(self, claim: Claim) -> Callable[[], dict[str, Any]]:
        """Everything before the request (the SSRF check, the tenant's secret, signing); returns the
        request itself."""
        url = claim.recipient
        try:
            if self._resolver is None:
                addresses = check_url(url, self._allowlist)
            else:
                addresses = check_url(url, self._allowlist, resolver=self._resolver)
        except RefusedUrl as error:
            raise PermanentProviderError(f"refused by the SSRF guard: {error}") from error
        body = webhook_payload(claim)
        now = datetime.now(UTC)
        secrets = self._secret_for(claim.tenant_id).signing(now=now, grace=self._grace)
        headers = signed_headers(secrets, str(claim.notification_id), body, now)
        request_url, extensions = _pinned(url, addresses[0] if addresses else None)
        if request_url != url:
            headers["Host"] = _host_header(url)
        return partial(self._post, claim, request_url, body.encode(), headers, extensions)

    def send(self, claim: Claim) -> dict[str, Any]:
        return self.prepare(claim)()

    def _post(
        self, claim: Claim, request_url: str, body: bytes, headers: dict[str, str], extensions: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            answer = self._client.post(request_url, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as error:  # the deadline, timeouts, refused or dropped connections
            raise TransientProviderError(f"webhook request failed: {error!r}") from error
        if answer.is_success:
            return {"status": answer.status_code}
        raise _classify(answer)

    def close(self) -> None:
        self._client.close()


def _classify(answer: Answer) -> TransientProviderError | PermanentProviderError:
    status = answer.status_code
    message = f"webhook answered {status}"
    if text := answer.text[:200].strip():
        message += f": {text}"
    if status == 429:
        return ProviderThrottled(message, retry_after=retry_after_seconds(answer))
    if status in _TRANSIENT_STATUSES or status >= 500:
        return TransientProviderError(message, retry_after=retry_after_seconds(answer))
    if 300 <= status < 400:
        message += f" (redirects are not followed; location {answer.headers.get('Location')!r})"
    return PermanentProviderError(message)


def _pinned(url: str, address: IPAddress | None) -> tuple[str, dict[str, Any]]:
    """The URL with its host replaced by the checked address (and, for https, the TLS server name
    kept as the original host); unchanged when there is nothing to pin."""
    parts = urlsplit(url)
    host = parts.hostname
    if address is None or host is None:
        return url, {}
    try:
        if ipaddress.ip_address(host.strip("[]")) == address:
            return url, {}  # already a literal address
    except ValueError:
        pass
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    if parts.username or parts.password:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{netloc}"
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), extensions


def _host_header(url: str) -> str:
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[2]
