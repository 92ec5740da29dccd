"""What `Pulse` and `AsyncPulse` share. Every operation is written once, as a method that builds a
`Call` (method, path, query, body, headers, how to read the answer); `operation` and `pages` turn it
into a blocking method on a `Pulse` resource and a coroutine (or async iterator) on an `AsyncPulse`
one. The clients differ only in how they send a `Call` (`Transport`)."""

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import Enum
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_jsonable_python
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from pulse_client.errors import PulseError, RateLimitError, ServiceUnavailableError, error_from

log = logging.getLogger("pulse_client")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
M = TypeVar("M")
Model = TypeVar("Model", bound=BaseModel)
P = ParamSpec("P")

# Methods the gateway treats as idempotent: sending one again after a lost answer changes nothing.
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """One request to the gateway and how to read its successful answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T_co]
    params: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def repeatable(self) -> bool:
        """Safe to send again when the answer was lost: an idempotent method, or an Idempotency-Key."""
        return self.method in IDEMPOTENT_METHODS or "Idempotency-Key" in self.headers

    def request(self, http: httpx.Client | httpx.AsyncClient, headers: Mapping[str, str]) -> httpx.Request:
        return http.build_request(
            self.method, self.path, params=self.params, json=self.body, headers={**headers, **self.headers}
        )

    def answer(self, response: httpx.Response) -> T_co:
        """The result, or the problem details raised as a `PulseError`."""
        if response.is_error:
            raise error_from(response)
        return self.read(response)

    def after(self, cursor: str) -> "Call[T_co]":
        """The same call for the page after `cursor`."""
        return replace(self, params={**self.params, "cursor": cursor})


def returns(model: type[Model]) -> Callable[[httpx.Response], Model]:
    def read(response: httpx.Response) -> Model:
        return model.model_validate_json(response.content)

    return read


def returns_one_of(union: Any) -> Callable[[httpx.Response], Any]:
    """For an answer that is one of several models (`A | B`): the one it validates as."""
    adapter: TypeAdapter[Any] = TypeAdapter(union)

    def read(response: httpx.Response) -> Any:
        return adapter.validate_json(response.content)

    return read


def returns_nothing(_: httpx.Response) -> None:
    return None


def body(value: BaseModel | Mapping[str, Any]) -> Any:
    """A model as the fields that were set on it (the gateway fills in its defaults), or a plain mapping."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return to_jsonable_python(value)


def query(**params: Any) -> dict[str, Any]:
    """Query parameters, leaving out those not given."""
    return {name: _query_value(value) for name, value in params.items() if value is not None}


def _query_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def segment(value: object) -> str:
    """A value as one path segment (a user id may hold `/`)."""
    return quote(str(value), safe="")


class CursorPage(Protocol[T_co]):
    @property
    def items(self) -> Sequence[T_co]: ...

    @property
    def next_cursor(self) -> str | None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long the clients wait before sending a request again.

    Retried: `429` and `503` answers, after their `Retry-After` (when it is at most `max_wait`; a longer
    one is raised at once); failures to connect; and, for requests safe to repeat (GET, PUT, DELETE, or
    a send with its Idempotency-Key), any other transport error. Without `Retry-After`, the waits grow
    exponentially from `backoff` seconds, with jitter, up to `max_wait`.
    """

    attempts: int = 4
    max_wait: float = 60.0
    backoff: float = 0.5

    def options(self, call: Call[Any]) -> dict[str, Any]:
        """Keyword arguments of tenacity's `Retrying` and `AsyncRetrying` for this call."""
        return {
            "stop": stop_after_attempt(self.attempts),
            "retry": retry_if_exception(functools.partial(self._retryable, call)),
            "wait": self._wait,
            "before_sleep": functools.partial(_log_retry, call),
            "reraise": True,
        }

    def _retryable(self, call: Call[Any], error: BaseException) -> bool:
        if isinstance(error, RateLimitError | ServiceUnavailableError):
            return error.retry_after is None or error.retry_after <= self.max_wait
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # the request never reached the gateway
        return isinstance(error, httpx.TransportError) and call.repeatable

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, PulseError) and error.retry_after is not None:
            return error.retry_after
        return float(wait_random_exponential(multiplier=self.backoff, max=self.max_wait)(state))


def _log_retry(call: Call[Any], state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning(
        "%s %s failed (%s); retrying in %.1f s",
        call.method,
        call.path,
        error,
        wait,
        extra={"pulse_wait": wait, "pulse_status": getattr(error, "status", None)},
    )


class Sync:
    """Marks the resources of `Pulse`: their operations block and return the result."""


class Async:
    """Marks the resources of `AsyncPulse`: their operations are coroutines."""


class Transport(Generic[M]):
    """Sends calls: `Pulse` (M = Sync) returns results, `AsyncPulse` (M = Async) awaitables."""

    def _run(self, call: Call[Any]) -> Any:
        raise NotImplementedError

    def _run_pages(self, call: Call[CursorPage[Any]]) -> Any:
        raise NotImplementedError


class Resource(Generic[M]):
    """A group of operations (notifications, templates, …) bound to a client."""

    def __init__(self, transport: Transport[M]) -> None:
        self._transport = transport


class operation(Generic[P, T]):  # noqa: N801 - used as a decorator
    """Turns a method building a `Call[T]` into an operation returning T (or an awaitable of T)."""

    def __init__(self, build: Callable[Concatenate[Any, P], Call[T]]) -> None:
        self._build = build

    @overload
    def __get__(self, resource: Resource[Sync], owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(self, resource: Resource[Async], owner: type | None = None) -> Callable[P, Awaitable[T]]: ...

    def __get__(self, resource: Resource[Any], owner: type | None = None) -> Callable[P, Any]:
        build = self._build

        def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            return resource._transport._run(build(resource, *args, **kwargs))

        run.__doc__ = build.__doc__
        return run


class pages(Generic[P, T]):  # noqa: N801 - used as a decorator
    """Turns a method building the call for a cursor-paginated list into an operation yielding every
    item of every page, following `next_cursor` (an async iterator on `AsyncPulse`)."""

    def __init__(self, build: Callable[Concatenate[Any, P], Call[CursorPage[T]]]) -> None:
        self._build = build

    @overload
    def __get__(self, resource: Resource[Sync], owner: type | None = None) -> Callable[P, Iterator[T]]: ...

    @overload
    def __get__(
        self, resource: Resource[Async], owner: type | None = None
    ) -> Callable[P, AsyncIterator[T]]: ...

    def __get__(self, resource: Resource[Any], owner: type | None = None) -> Callable[P, Any]:
        build = self._build

        def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            return resource._transport._run_pages(build(resource, *args, **kwargs))

        run.__doc__ = build.__doc__
        return run
