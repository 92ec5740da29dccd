"""Request-scoped collaborators, as typed `Annotated` aliases for the route signatures."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.errors import Forbidden, Unauthorized
from pulse.inapp.events import RealtimePublisher
from pulse.inapp.tokens import EndUser, InvalidToken, read_token
from pulse.notifications.intake import Intake
from pulse.outbox.service import AfterCommitPublisher
from pulse.rate_limits.service import SendLimits
from pulse.tenants.service import API_KEY_PREFIX, Principal, Scope, find_principal, hash_api_key
from pulse.timing.policy import TenantPolicy
from services.api.settings import ApiSettings


class ApiKeyCache:
    """Verified keys, remembered briefly so that most requests skip the key lookup; the requests that
    miss together share one lookup."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def principal(
        self, key_hash: str, look_up: Callable[[], Awaitable[Principal | None]]
    ) -> Principal | None:
        """The key's principal: remembered, else from `look_up` (None: no such key). When the entry
        expires under load, every request in flight misses it at once: one lookup serves them all (each
        would take a thread, a pooled connection or, past the pool, a new one, and the key's row lock
        to mark it used)."""
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] >= time.monotonic():
            return entry[1]
        lookup = self._lookups.get(key_hash)
        if lookup is None:
            lookup = self._lookups[key_hash] = asyncio.ensure_future(self._remembered(key_hash, look_up))
            lookup.add_done_callback(lambda _: self._lookups.pop(key_hash, None))
        # Shielded: a request that goes away does not cancel the lookup the others wait for.
        return await asyncio.shield(lookup)

    async def _remembered(
        self, key_hash: str, look_up: Callable[[], Awaitable[Principal | None]]
    ) -> Principal | None:
        principal = await look_up()
        if principal is not None:
            self._entries[key_hash] = (time.monotonic() + self._ttl, principal)
        return principal


@dataclass
class Gateway:
    """What the gateway's routes share for the life of the process."""

    settings: ApiSettings
    engine: Engine
    session_factory: sessionmaker[Session]
    celery: Celery
    publisher: AfterCommitPublisher
    intake: Intake
    api_keys: ApiKeyCache
    realtime: RealtimePublisher

    def policy_for(self, principal: Principal) -> TenantPolicy:
        """The tenant's time zone, quiet hours and default priority (its own, else the deployment's)."""
        return TenantPolicy.of(
            principal.timezone,
            principal.quiet_hours,
            default=self.settings.default_quiet_hours,
            default_priority=principal.default_priority,
        )

    def rate_for(self, principal: Principal) -> SendLimits:
        """The tenant's rate limit and quota, else the deployment's."""
        return self.settings.rate_for(
            limit=principal.rate_limit,
            window_seconds=principal.rate_limit_window_seconds,
            sends_per_minute=principal.sends_per_minute,
        )


# Dependencies that do not block are `async def`: FastAPI runs sync ones in the threadpool, a
# thread hop each, which cost more than the gateway's own work per request.


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def get_session(gateway: GatewayDep) -> Iterator[Session]:
    """A read-only session; writes open their own transaction so they can publish after commit."""
    with gateway.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key itself.")


async def authenticate(
    gateway: GatewayDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key_header)],
) -> Principal:
    key = bearer.credentials if bearer is not None else api_key
    if not key:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
    principal = await gateway.api_keys.principal(
        hash_api_key(key), lambda: run_in_threadpool(_look_up_key, gateway, key)
    )
    if principal is None:
        raise Unauthorized("invalid API key (unknown or revoked)")
    # Checked on the cached principal too: a key stops working the moment it expires.
    if principal.expired():
        raise Unauthorized("API key expired")
    return principal


def _look_up_key(gateway: Gateway, key: str) -> Principal | None:
    # Once per key and process every PULSE_AUTH_CACHE_SECONDS: the moment to mark the key used.
    with transaction(gateway.session_factory) as session:
        return find_principal(session, key=key, mark_used=True)


def require_scope(*scopes: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A key with one of `scopes`."""

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.scopes & set(scopes):
            raise Forbidden(f"this API key lacks the {' or '.join(f'`{scope}`' for scope in scopes)} scope")
        return principal

    return check


SenderDep = Annotated[Principal, Depends(require_scope(Scope.SEND))]
ReaderDep = Annotated[Principal, Depends(require_scope(Scope.READ))]
AdminDep = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]
# Who may issue end-user tokens: a backend that sends, or an administrator.
TokenIssuerDep = Annotated[Principal, Depends(require_scope(Scope.SEND, Scope.ADMIN))]

_end_user_bearer = HTTPBearer(
    auto_error=False, scheme_name="EndUserToken", description="`Authorization: Bearer <end-user token>`"
)


async def authenticate_end_user(
    gateway: GatewayDep, bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_end_user_bearer)]
) -> EndUser:
    """The end user of the /v1/inbox routes: a token from POST /v1/auth/token, never an API key."""
    if bearer is None:
        raise Unauthorized("missing end-user token: send `Authorization: Bearer <token from /v1/auth/token>`")
    if bearer.credentials.startswith(API_KEY_PREFIX):
        raise Unauthorized("an API key is not an end-user token: get one from POST /v1/auth/token")
    try:
        end_user, _ = read_token(gateway.settings.jwt.secret.get_secret_value(), bearer.credentials)
    except InvalidToken as error:
        raise Unauthorized(f"invalid end-user token: {error}") from error
    return end_user


EndUserDep = Annotated[EndUser, Depends(authenticate_end_user)]
