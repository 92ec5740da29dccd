"""`Pulse` (blocking) and `AsyncPulse` (asyncio): the same resources over httpx."""

from collections.abc import AsyncIterator, Iterator
from importlib.metadata import version
from types import TracebackType
from typing import Any, Self

import httpx
from tenacity import AsyncRetrying, Retrying

from pulse_client._core import Async, Call, CursorPage, M, RetryPolicy, Sync, Transport
from pulse_client.resources import (
    Analytics,
    ApiKeys,
    AuditLog,
    Auth,
    DeadLetters,
    Fanouts,
    Inbox,
    Notifications,
    Presences,
    Recipients,
    Schedules,
    Templates,
    Topics,
    WebhookSecrets,
)

DEFAULT_BASE_URL = "http://localhost:8000"
USER_AGENT = f"pulse-client/{version('pulse-client')}"


class Client(Transport[M]):
    """The resources, bound to this client. An API key authorizes every resource but `inbox`; an end
    user's token (from `auth.token`) authorizes `inbox` only, for that user."""

    def __init__(self, api_key: str | None, token: str | None, retry: RetryPolicy) -> None:
        if (api_key is None) == (token is None):
            raise ValueError("give an API key, or an end user's token (`token=`), not both")
        self._headers = {"Authorization": f"Bearer {api_key or token}", "User-Agent": USER_AGENT}
        self._retry = retry
        self.notifications = Notifications(self)
        self.templates = Templates(self)
        self.schedules = Schedules(self)
        self.recipients = Recipients(self)
        self.dead_letters = DeadLetters(self)
        self.webhook_secret = WebhookSecrets(self)
        self.analytics = Analytics(self)
        self.auth = Auth(self)
        self.inbox = Inbox(self)
        self.presence = Presences(self)
        self.topics = Topics(self)
        self.fanouts = Fanouts(self)
        self.api_keys = ApiKeys(self)
        self.audit_log = AuditLog(self)


class Pulse(Client[Sync]):
    """The Pulse API, blocking, with an API key (`Pulse(key)`) or, for an end user's inbox only, their
    token (`Pulse(token=...)`). Use it as a context manager, or `close()` it.

    `http_client` may be an `httpx.Client` of your own (proxies, transports, ...); its `base_url` is
    then used and it is not closed by `close()`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        token: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(api_key, token, retry or RetryPolicy())
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout)

    def _run(self, call: Call[Any]) -> Any:
        return Retrying(**self._retry.options(call))(self._send, call)

    def _send(self, call: Call[Any]) -> Any:
        return call.answer(self._http.send(call.request(self._http, self._headers)))

    def _run_pages(self, call: Call[CursorPage[Any]]) -> Iterator[Any]:
        while True:
            page = self._run(call)
            yield from page.items
            if page.next_cursor is None:
                return
            call = call.after(page.next_cursor)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsyncPulse(Client[Async]):
    """The Pulse API for asyncio: the same operations as `Pulse`, as coroutines (`iter` operations
    are async iterators). Use it as an async context manager, or `await aclose()`."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        token: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(api_key, token, retry or RetryPolicy())
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def _run(self, call: Call[Any]) -> Any:
        return await AsyncRetrying(**self._retry.options(call))(self._send, call)

    async def _send(self, call: Call[Any]) -> Any:
        return call.answer(await self._http.send(call.request(self._http, self._headers)))

    async def _run_pages(self, call: Call[CursorPage[Any]]) -> AsyncIterator[Any]:
        while True:
            page = await self._run(call)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            call = call.after(page.next_cursor)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
