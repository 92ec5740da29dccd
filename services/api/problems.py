"""Every error leaves the gateway as RFC 9457 problem details; never as a stack trace."""

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException

from pulse.errors import Conflict, Forbidden, InvalidInput, NotFound, RateLimited, Unauthorized
from services.api.bodies import REFUSED_BODY

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(
        description="Where: the request's part (`body`, `query`, `path`, `header`), then the field's path."
    )
    msg: str = Field(description="Why it was refused.")
    type: str = Field(description="A machine-readable kind, e.g. `missing`, `value_error`, `json_invalid`.")


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error answer (`application/problem+json`)."""

    type: str = Field(description="Always `about:blank`: `status` and `title` say what happened.")
    title: str = Field(description="The status's phrase, e.g. `Unprocessable Entity`.")
    status: int
    detail: str | None = Field(None, description="What was wrong, in words.")
    errors: list[FieldProblem] | None = Field(
        None, description="422 (and a refused batch): every refused input, with where and why."
    )


# Error answers that any operation may give, besides those its route declares.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "Body over the size limit"},
    503: {"description": "The database is unavailable; nothing was done (`Retry-After`)"},
}

_HEADERS_OF_STATUS = {
    429: {"Retry-After": {"description": "Seconds until the limit resets.", "schema": {"type": "integer"}}},
}


def document_problems(app: FastAPI) -> None:
    """Give every error answer of the OpenAPI document (a 4xx or 5xx without a schema of its own) the
    problem+json schema, so that generated clients and schema checks know its shape."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _describe_problems(build())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_problems(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operation in (operation for path in schema.get("paths", {}).values() for operation in path.values()):
        for status, response in operation.get("responses", {}).items():
            declared = response.get("content", {}).get("application/json", {}).get("schema", {})
            if int(status) >= 400 and declared.get("$ref", "").endswith("/HTTPValidationError"):
                del response["content"]
            if int(status) >= 400 and not response.get("content"):
                response["content"] = content
                response.setdefault("headers", {}).update(_HEADERS_OF_STATUS.get(int(status), {}))


def problem(
    status: int, detail: str | None = None, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse({**body, **extra}, status_code=status, headers=headers, media_type=PROBLEM_JSON)


_DOMAIN_STATUS: dict[type[Exception], int] = {
    NotFound: 404,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return problem(error.status_code, str(error.detail), headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        refused_body = request.scope.get(REFUSED_BODY)
        if refused_body is not None:
            # The body model's own complaint is about the stand-in; say what is wrong with the body.
            errors = [*(e for e in errors if e["loc"][:1] != ["body"]), refused_body]
        return problem(422, "The request is invalid; see `errors`.", errors=errors)

    for error_type, status in _DOMAIN_STATUS.items():

        async def domain_error(_: Request, error: Exception, status: int = status) -> JSONResponse:
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return problem(status, str(error), headers=headers)

        app.add_exception_handler(error_type, domain_error)

    @app.exception_handler(InvalidInput)
    async def invalid_input(_: Request, error: InvalidInput) -> JSONResponse:
        # The same shape as a schema violation, so clients handle every 422 alike.
        location = list(error.location) if error.location else ["body"]
        return problem(422, str(error), errors=[{"loc": location, "msg": str(error), "type": "value_error"}])

    @app.exception_handler(RateLimited)
    async def rate_limited(_: Request, error: RateLimited) -> JSONResponse:
        return problem(429, str(error), headers=rate_limited_headers(error))

    async def database_unavailable(_: Request, error: Exception) -> JSONResponse:
        log.error("database unavailable: %s", error)
        return problem(503, "The database is unavailable; try again shortly.", headers={"Retry-After": "5"})

    # Only connection-level failures mean "unavailable"; other DB errors are bugs and stay 500s.
    app.add_exception_handler(PoolTimeoutError, database_unavailable)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, error: DBAPIError) -> JSONResponse:
        if error.connection_invalidated or _is_connection_failure(error):
            return await database_unavailable(request, error)
        log.exception("database error", exc_info=error)
        return problem(500, "Internal error; it has been logged.")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=error)
        return problem(500, "Internal error; it has been logged.")


def rate_limit_headers(*, limit: int, remaining: int, reset_seconds: int) -> dict[str, str]:
    """The RateLimit-* response headers (IETF httpapi-ratelimit-headers, delta-seconds reset)."""
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset_seconds),
    }


def rate_limited_headers(error: RateLimited) -> dict[str, str]:
    return {
        "Retry-After": str(error.reset_seconds),
        **rate_limit_headers(limit=error.limit, remaining=0, reset_seconds=error.reset_seconds),
    }


def _is_connection_failure(error: DBAPIError) -> bool:
    return isinstance(error.orig, psycopg.OperationalError)
