"""Talking HTTP to providers: a client for answers that may misbehave (a deadline per request, a cap
on what is read), and reading providers' answers (their JSON error bodies, Retry-After)."""

import asyncio
import contextlib
import json
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

# Providers' answers are read for a status, an id or an error message: a cap well above any of those.
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: its status and headers, and the start of its body (what arrived before the
    deadline, up to the client's cap)."""

    status_code: int
    headers: httpx.Headers
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":  # Not asked for, so not inflated: it could be a bomb.
            return f"({encoding}-encoded body not shown)"
        return self.body.decode(errors="replace")


class BoundedClient:
    """An HTTP client for receivers that may misbehave: each request, from connecting to the last
    byte read, ends within `deadline_seconds`, and at most `max_body_bytes` of an answer's body are
    read, never decompressed (it asks for `Accept-Encoding: identity`).

    httpx's timeouts bound each network operation, not the request: an answer dripped a byte at a
    time never trips them. So requests run on an asyncio event loop of the client's own (one daemon
    thread), where `asyncio.timeout` cancels the whole exchange; callers in any thread block on the
    result, as with a synchronous client. `options` are httpx.AsyncClient's.
    """

    def __init__(
        self, *, deadline_seconds: float, max_body_bytes: int = MAX_ANSWER_BYTES, **options: Any
    ) -> None:
        headers = {**options.pop("headers", {}), "Accept-Encoding": "identity"}
        self._client = httpx.AsyncClient(headers=headers, **options)
        self._deadline = deadline_seconds
        self._max_body = max_body_bytes
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="bounded-http", daemon=True).start()

    def post(self, url: str, **kwargs: Any) -> Answer:
        """POST (`kwargs` as httpx's `build_request`). Raises httpx.TimeoutException when no answer
        (status and headers) came by the deadline, other httpx.HTTPErrors as httpx does; once the
        answer came, a body cut short by the deadline or the connection is returned as far as it got."""
        return asyncio.run_coroutine_threadsafe(self._post(url, **kwargs), self._loop).result()

    async def _post(self, url: str, **kwargs: Any) -> Answer:
        deadline = asyncio.get_running_loop().time() + self._deadline
        request = self._client.build_request("POST", url, **kwargs)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._client.send(request, stream=True)
        except TimeoutError as error:
            raise httpx.TimeoutException(f"no answer within the {self._deadline:g} s deadline") from error
        body = bytearray()
        try:
            with contextlib.suppress(TimeoutError, httpx.HTTPError):
                async with asyncio.timeout_at(deadline):
                    async for chunk in response.aiter_raw():
                        body += chunk[: self._max_body - len(body)]
                        if len(body) >= self._max_body:
                            break
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, bytes(body))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)


def json_object(answer: Answer) -> dict[str, object]:
    """The body as a JSON object; empty when it is not one (or was cut short)."""
    try:
        parsed = json.loads(answer.body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def retry_after_seconds(response: httpx.Response | Answer) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
