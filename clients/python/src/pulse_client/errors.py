"""Problem details (RFC 9457) from the gateway, raised as exceptions."""

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


@dataclass(frozen=True)
class FieldError:
    """One refused input: `loc` says where (`("body", "recipient")`), `msg` why."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def field(self) -> str:
        """The location without its part of the request, dotted: `recipient`, `notifications.1.recipient`."""
        return ".".join(str(part) for part in self.loc[1:]) or str(self.loc[0] if self.loc else "")


class PulseError(Exception):
    """An error answer of the gateway (any 4xx or 5xx), with its problem details."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        retry_after: float | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after
        self.problem = problem or {}

    @property
    def fields(self) -> list[str]:
        """The refused fields, dotted (see `FieldError.field`)."""
        return [error.field for error in self.errors]


class AuthenticationError(PulseError):
    """401: the API key is missing or invalid."""


class PermissionDeniedError(PulseError):
    """403: the API key lacks the scope the operation needs."""


class NotFoundError(PulseError):
    """404: no such object for this tenant."""


class ConflictError(PulseError):
    """409: e.g. an Idempotency-Key reused with another body, or a notification past cancelling."""


class PayloadTooLargeError(PulseError):
    """413: the body is over the gateway's size limit."""


class InvalidRequestError(PulseError):
    """422: the input is refused; `errors` (and `fields`) say where and why."""


class RateLimitError(PulseError):
    """429: over a rate limit or the tenant's quota; `retry_after` says when to try again."""


class ServiceUnavailableError(PulseError):
    """503: the gateway cannot reach its database; nothing was accepted."""


ERRORS_BY_STATUS: dict[int, type[PulseError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from(response: httpx.Response) -> PulseError:
    """The exception for an error answer, from its problem details when it has them."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {}
    errors = [
        FieldError(
            loc=tuple(error.get("loc", ())), msg=str(error.get("msg", "")), type=str(error.get("type", ""))
        )
        for error in problem.get("errors") or []
        if isinstance(error, dict)
    ]
    kind = ERRORS_BY_STATUS.get(response.status_code, PulseError)
    return kind(
        response.status_code,
        str(problem.get("title") or response.reason_phrase),
        problem.get("detail"),
        errors=errors,
        retry_after=retry_after(response),
        problem=problem,
    )


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (it may be given as seconds or as an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
