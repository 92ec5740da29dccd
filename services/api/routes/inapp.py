"""The in-app channel's gateway routes: end-user tokens (for a tenant's backend) and the inbox (for its
end users' browsers and apps, with such a token)."""

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from pulse.addresses import MAX_USER_ID
from pulse.db import transaction
from pulse.errors import NotFound
from pulse.inapp.events import read_event
from pulse.inapp.inbox import (
    MAX_READ_ALL,
    InboxItem,
    InboxStatus,
    inbox_page,
    mark_all_read,
    mark_read,
    unread_count,
)
from pulse.inapp.tokens import EndUser, issue_token
from pulse.text import NO_NUL_CHARACTERS
from services.api.bodies import StrictJsonRoute
from services.api.deps import EndUserDep, Gateway, GatewayDep, SessionDep, TokenIssuerDep
from services.api.routes.notifications import ERROR_RESPONSES

auth_router = APIRouter(
    prefix="/v1/auth", tags=["in-app"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)
inbox_router = APIRouter(
    prefix="/v1/inbox",
    tags=["in-app"],
    responses={401: {"description": "Missing, invalid or expired end-user token (or an API key)"}},
    route_class=StrictJsonRoute,
)

MIN_TOKEN_TTL_SECONDS = 60
MAX_TOKEN_TTL_SECONDS = 24 * 3600


class TokenRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": "u-1", "ttl_seconds": 3600}]}
    )

    user_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_USER_ID,
            pattern=NO_NUL_CHARACTERS,
            description="Your id of the end user: the `recipient` (or `user_id`) of their inapp sends.",
        ),
    ]
    ttl_seconds: Annotated[
        int,
        Field(
            ge=MIN_TOKEN_TTL_SECONDS,
            le=MAX_TOKEN_TTL_SECONDS,
            description="How long the token is valid: 60 s to 24 h.",
        ),
    ] = 3600


class TokenOut(BaseModel):
    token: str = Field(
        description="A JWT for `Authorization: Bearer` on /v1/inbox and `?token=` on the WebSocket."
    )
    expires_at: datetime


class InboxPage(BaseModel):
    items: list[InboxItem]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last.")
    unread_count: int


class UnreadCount(BaseModel):
    unread_count: int


class ReadAll(BaseModel):
    updated: int = Field(description=f"How many were marked read (at most {MAX_READ_ALL}: call again then).")


@auth_router.post("/token", response_model=TokenOut)
def create_end_user_token(
    request: TokenRequest,
    gateway: GatewayDep,
    principal: TokenIssuerDep,
) -> TokenOut:
    """A short-lived token for one of your end users, to hand to their browser or app: it reads that
    user's inbox (and nothing else) and opens the realtime WebSocket. Needs a key with `send` or `admin`."""
    end_user = EndUser(tenant_id=principal.tenant_id, user_id=request.user_id)
    token, expires_at = issue_token(
        gateway.settings.jwt.secret.get_secret_value(), end_user, request.ttl_seconds
    )
    return TokenOut(token=token, expires_at=expires_at)


NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No such item in this user's inbox"}}


@inbox_router.get("", response_model=InboxPage)
def read_inbox(
    end_user: EndUserDep,
    session: SessionDep,
    status: Annotated[InboxStatus, Query(description="Which items: `unread`, `read` or `all`.")] = (
        InboxStatus.ALL
    ),
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> InboxPage:
    """The user's in-app notifications, newest first, and how many are unread."""
    items, next_cursor = inbox_page(session, end_user, status=status, limit=limit, cursor=cursor)
    return InboxPage(items=items, next_cursor=next_cursor, unread_count=unread_count(session, end_user))


@inbox_router.get("/unread-count", response_model=UnreadCount)
def count_unread(end_user: EndUserDep, session: SessionDep) -> UnreadCount:
    """How many of the user's items are unread (for a badge)."""
    return UnreadCount(unread_count=unread_count(session, end_user))


@inbox_router.patch("/{notification_id}/read", response_model=InboxItem, responses=NOT_FOUND)
def read_item(notification_id: uuid.UUID, end_user: EndUserDep, gateway: GatewayDep) -> InboxItem:
    """Mark one item read (again: no change). Its `notification.read` callback is owed, and the
    user's other open connections are told."""
    with transaction(gateway.session_factory) as session:
        item = mark_read(session, end_user, notification_id)
    if item is None:
        raise NotFound(f"notification {notification_id} is not in this user's inbox")
    _tell_others(gateway, end_user, [item.id])
    return item


@inbox_router.post("/read-all", response_model=ReadAll)
def read_all(end_user: EndUserDep, gateway: GatewayDep) -> ReadAll:
    """Mark every unread item read (the newest 10 000 per call: call again while `updated` is that)."""
    with transaction(gateway.session_factory) as session:
        ids = mark_all_read(session, end_user)
    _tell_others(gateway, end_user, ids)
    return ReadAll(updated=len(ids))


def _tell_others(gateway: Gateway, end_user: EndUser, ids: list[uuid.UUID]) -> None:
    """The user's open connections (other tabs, devices) learn what was read; best effort."""
    if ids:
        gateway.realtime.publish(end_user, read_event(end_user, ids))
