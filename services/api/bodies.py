"""Request bodies parsed strictly, and a body that is refused here reported only once the route's
dependencies ran: a request without a valid key is a 401 whatever its body."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic_core import from_json

from pulse.text import Location, nul_character_location, nul_characters_refused

# Where the scope keeps why the body was refused: the error of the 422 (services.api.problems).
REFUSED_BODY = "pulse.refused_body"

# Stands in for a refused body: no body model accepts it, so validation fails after the
# dependencies (authentication, scopes) ran, and the 422 reports REFUSED_BODY instead.
_REFUSED = object()


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                # Unlike json.loads, refuses what PostgreSQL cannot store or a response cannot carry:
                # bytes that are not UTF-8, lone surrogates (\ud800), NaN and Infinity literals,
                # nesting deeper than 200 levels.
                self._json = from_json(body, allow_inf_nan=False)
            except ValueError as error:
                self._refuse(f"invalid JSON: {error}", "json_invalid")
                return self._json
            # JSON text holds NUL only as this escape; PostgreSQL has no NUL in text or jsonb.
            if b"\\u0000" in body and (location := nul_character_location(self._json)) is not None:
                self._refuse(nul_characters_refused(location), "value_error", location)
        return self._json

    def _refuse(self, message: str, kind: str, location: Location = ()) -> None:
        self.scope[REFUSED_BODY] = {"loc": ["body", *location], "msg": message, "type": kind}
        self._json = _REFUSED


class StrictJsonRoute(APIRoute):
    """The route class of every /v1 router."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_strictly(request: Request) -> Response:
            return await handle(_StrictJsonRequest(request.scope, request.receive))

        return handle_strictly
