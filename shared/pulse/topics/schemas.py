"""The topic and fan-out API's request and response bodies."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from pulse.addresses import MAX_USER_ID
from pulse.text import NO_NUL_CHARACTERS

MAX_SUBSCRIBERS_PER_CALL = 1000

UserId = Annotated[str, Field(min_length=1, max_length=MAX_USER_ID, pattern=NO_NUL_CHARACTERS)]


class FanoutStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class SubscribersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user_ids": ["u-1", "u-2"]}]})

    user_ids: Annotated[
        list[UserId],
        Field(
            min_length=1,
            max_length=MAX_SUBSCRIBERS_PER_CALL,
            description=f"1 to {MAX_SUBSCRIBERS_PER_CALL} of your end users' ids (as `user_id` in sends).",
        ),
    ]


class TopicOut(BaseModel):
    key: str
    subscribers: int = Field(description="How many users are subscribed now.")


class SubscribersAdded(TopicOut):
    added: int = Field(description="Users this call subscribed (the others already were).")


class SubscribersRemoved(TopicOut):
    removed: int = Field(description="Users this call unsubscribed (the others were not subscribed).")


class SubscriberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: str
    subscribed_at: datetime = Field(validation_alias="created_at")


class SubscriberPage(BaseModel):
    items: list[SubscriberOut] = Field(description="In user id order.")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last.")


class TopicSendAccepted(BaseModel):
    """The answer to a send with `topic`: the fan-out is committed; its notifications come."""

    topic: str
    fanout_id: uuid.UUID = Field(description="Follow it at GET /v1/fanouts/{fanout_id}.")
    recipients: int = Field(description="The topic's subscribers when the send was accepted.")
    status: FanoutStatus = FanoutStatus.RUNNING


class FanoutOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    topic: str
    status: FanoutStatus = Field(
        description="`running` while subscribers are left, `done`, or `cancelled` (what was created "
        "before stays)."
    )
    recipients: int = Field(description="The topic's subscribers when the send was accepted.")
    created: int = Field(description="Notifications created so far, one per subscriber.")
    skipped: int = Field(description="Subscribers a send with their user_id would have been refused for.")
    skipped_reasons: dict[str, int] = Field(
        description="Skipped subscribers by reason: `opted_out` (of the channel), `no_address` (no "
        "profile, no address for the channel, or a push token FCM reported invalid), `rate_limited` "
        "(their per-recipient limit), `invalid` (e.g. the template no longer renders for them)."
    )
    notification: dict[str, Any] = Field(description="What each subscriber is sent (without `user_id`).")
    created_at: datetime
    updated_at: datetime = Field(
        validation_alias="progressed_at", description="When it last created notifications or changed status."
    )
    finished_at: datetime | None
