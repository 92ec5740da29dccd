"""End-user tokens: short-lived JWTs (HS256) that let one user of one tenant read their own inbox.

A tenant's backend asks the gateway for one (POST /v1/auth/token) and hands it to its front end, which
presents it to the gateway's /v1/inbox routes and to the realtime service's WebSocket. The `aud` claim
marks it as an end-user token, so no other JWT signed with the same secret passes for one.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"
AUDIENCE = "pulse:end-user"
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "tenant", "aud"]


@dataclass(frozen=True)
class EndUser:
    """Who an end-user token speaks for: one user id within one tenant."""

    tenant_id: uuid.UUID
    user_id: str


class InvalidToken(Exception):
    """The token is not a valid end-user token; the message says why (expired, bad signature, …)."""


def issue_token(secret: str, end_user: EndUser, ttl_seconds: int) -> tuple[str, datetime]:
    """A token for `end_user`, valid for `ttl_seconds` from now, and the instant it expires."""
    issued_at = datetime.now(UTC).replace(microsecond=0)
    expires_at = issued_at + timedelta(seconds=ttl_seconds)
    claims = {
        "sub": end_user.user_id,
        "tenant": str(end_user.tenant_id),
        "aud": AUDIENCE,
        "iat": issued_at,
        "exp": expires_at,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires_at


def read_token(secret: str, token: str) -> tuple[EndUser, datetime]:
    """The end user a token speaks for and the instant it expires; raises InvalidToken saying what is
    wrong with it."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken("the token has expired") from error
    except jwt.InvalidSignatureError as error:
        raise InvalidToken("the token's signature is not valid") from error
    except jwt.InvalidAudienceError as error:
        raise InvalidToken("not an end-user token (wrong audience)") from error
    except jwt.MissingRequiredClaimError as error:
        raise InvalidToken(f"the token lacks the `{error.claim}` claim") from error
    except jwt.PyJWTError as error:
        raise InvalidToken(f"malformed token: {error}") from error
    user_id, tenant = claims["sub"], claims["tenant"]
    if not isinstance(user_id, str) or not user_id:
        raise InvalidToken("malformed token: `sub` must be a user id")
    try:
        tenant_id = uuid.UUID(str(tenant))
    except ValueError as error:
        raise InvalidToken("malformed token: `tenant` must be a tenant id") from error
    return EndUser(tenant_id=tenant_id, user_id=user_id), datetime.fromtimestamp(claims["exp"], UTC)
