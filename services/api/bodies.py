"""Request bodies parsed strictly, and a body that is not JSON reported only once the route's
dependencies ran: a request without a valid key is a 401 whatever its body."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic_core import from_json

# Where the scope keeps why the body could not be parsed, for the 422 (services.api.problems).
UNPARSABLE_BODY = "pulse.unparsable_body"

# Stands in for a body that could not be parsed: no body model accepts it, so validation fails
# after the dependencies (authentication, scopes) ran, and the 422 reports UNPARSABLE_BODY.
_UNPARSABLE = object()


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                # Unlike json.loads, refuses what PostgreSQL cannot store or the response cannot
                # carry: bytes that are not UTF-8, lone surrogates (\ud800), NaN and Infinity
                # literals, nesting deeper than 200 levels.
                self._json = from_json(await self.body(), allow_inf_nan=False)
            except ValueError as error:
                self.scope[UNPARSABLE_BODY] = str(error)
                self._json = _UNPARSABLE
        return self._json


class StrictJsonRoute(APIRoute):
    """The route class of every /v1 router."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_strictly(request: Request) -> Response:
            return await handle(_StrictJsonRequest(request.scope, request.receive))

        return handle_strictly
