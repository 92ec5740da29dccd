"""The notification API's request and response bodies."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pulse.addresses import MAX_DEVICE_TOKEN, channel_address, webhook_url
from pulse.inputs import DateTimeInput, JsonObject, TopicKey
from pulse.text import refuse_nul_characters
from pulse.timing.clock import TimeZoneName
from pulse.vocabulary import Channel, Priority, Status

_MAX_SUBJECT = 998  # RFC 5322's line limit: a longer subject cannot be sent as one header line.
_MAX_SMS_BODY = 1600  # Twilio refuses longer bodies (it splits the rest into segments itself).
_PHONE_CHANNELS = (Channel.SMS, Channel.WHATSAPP)
MIN_DIGEST_WINDOW_SECONDS = 10
MAX_DIGEST_WINDOW_SECONDS = 7 * 86_400
MAX_DIGEST_EVENTS = 1000


class Content(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str | None, Field(max_length=_MAX_SUBJECT, description="Required for email.")] = None
    body: Annotated[
        str,
        Field(min_length=1, description="Plain-text body (at most 1600 characters for sms and whatsapp)."),
    ]
    html: Annotated[str | None, Field(description="Optional HTML alternative (email).")] = None
    data: Annotated[JsonObject | None, Field(description="Structured payload (push, webhook).")] = None


class DigestSpec(BaseModel):
    """Collect sends into one notification (see README, Digests)."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$",
            description="Sends with the same (user_id, channel, key) are collected together: letters, "
            "digits and `_.:-`, at most 100 characters.",
        ),
    ]
    window_seconds: Annotated[
        int,
        Field(
            ge=MIN_DIGEST_WINDOW_SECONDS,
            le=MAX_DIGEST_WINDOW_SECONDS,
            description="How long the window stays open, from its first send (10 s to 7 days); the "
            "combined notification is sent when it closes (after quiet hours, if they apply).",
        ),
    ]
    max_events: Annotated[
        int | None,
        Field(
            ge=2,
            le=MAX_DIGEST_EVENTS,
            description=f"Sent early once this many sends are collected (2 to {MAX_DIGEST_EVENTS}; "
            f"default {MAX_DIGEST_EVENTS}).",
        ),
    ] = None


# Channels an unread inapp notification may escalate to: those a recipient profile has an address for.
ESCALATION_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.WHATSAPP, Channel.PUSH)
MIN_ESCALATION_SECONDS = 10
MAX_ESCALATION_SECONDS = 7 * 24 * 3600


class Escalation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_seconds: Annotated[
        int,
        Field(
            ge=MIN_ESCALATION_SECONDS,
            le=MAX_ESCALATION_SECONDS,
            description="How long the inapp notification may stay unread (from when it is due) before "
            "it goes out on another channel; 10 s to 7 days.",
        ),
    ]
    channels: Annotated[
        list[Channel],
        Field(
            min_length=1,
            max_length=len(ESCALATION_CHANNELS),
            description="Tried in order: the first for which the user's recipient profile has an address "
            "and their preferences allow it gets the same content (email, sms, whatsapp, push).",
        ),
    ]

    @field_validator("channels")
    @classmethod
    def _profile_channels(cls, channels: list[Channel]) -> list[Channel]:
        if unknown := [channel for channel in channels if channel not in ESCALATION_CHANNELS]:
            raise ValueError(
                f"cannot escalate to {', '.join(unknown)}: choose among {', '.join(ESCALATION_CHANNELS)}"
            )
        if len(set(channels)) < len(channels):
            raise ValueError("each channel at most once")
        return channels


class NotificationRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "channel": "email",
                    "recipient": "ada@example.com",
                    "content": {"subject": "Welcome", "body": "Hello Ada", "html": "<p>Hello Ada</p>"},
                    "metadata": {"order": "A-1001"},
                }
            ]
        },
    )

    channel: Channel
    recipient: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_DEVICE_TOKEN,
            description="Address for the channel: an email address, for sms and whatsapp a phone number "
            "with its country code (normalised to E.164; a `whatsapp:` prefix is accepted), for push a "
            "device token (FCM registration token, up to 4096 characters; others up to 2048). May be "
            "left out when `user_id` names a recipient profile with an address for the channel.",
        ),
    ] = None
    user_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=255,
            description="Your id of the end user: rate limits count per user, and their recipient "
            "profile (addresses, time zone, quiet hours, locale, opt-outs) applies.",
        ),
    ] = None
    topic: Annotated[
        TopicKey | None,
        Field(
            description="Send to every subscriber of this topic instead of one `recipient`/`user_id`: "
            "answers 202 with a `fanout_id` at once; each subscriber's notification is created "
            "asynchronously, as a send with their `user_id` would be (GET /v1/fanouts/{id})."
        ),
    ] = None
    template: Annotated[
        str | None,
        Field(min_length=1, max_length=100, description="A template's name; instead of `content`."),
    ] = None
    variables: Annotated[
        JsonObject, Field(description="Values for the template's variables (with `template`).")
    ] = {}
    content: Annotated[Content | None, Field(description="The message itself; instead of `template`.")] = None
    priority: Annotated[
        Priority | None,
        Field(
            description="Default: the template's (a template whose name contains `otp`: `critical`), "
            "else the tenant's, else `normal`."
        ),
    ] = None
    send_at: Annotated[
        DateTimeInput | None,
        Field(
            description="When to send (ISO 8601, years 2000 to 2100); naive values are read in `timezone`; "
            "past ones mean now."
        ),
    ] = None
    timezone: Annotated[
        TimeZoneName | None,
        Field(description="The recipient's IANA time zone (default: the tenant's, else UTC).", max_length=64),
    ] = None
    respect_quiet_hours: Annotated[
        bool, Field(description="Wait for the recipient's quiet hours to end (`critical` never waits).")
    ] = True
    metadata: Annotated[JsonObject, Field(description="Stored and returned as given.")] = {}
    callback_url: Annotated[
        str | None,
        Field(
            max_length=2048,
            description="Receives a signed (Standard Webhooks) event for each status change: "
            "`delivered`, `failed`, `read`.",
        ),
    ] = None
    digest: Annotated[
        DigestSpec | None,
        Field(
            description="Collect this send with the user's other sends of the same `key` on this channel "
            "into one notification, rendered from `template` with `events` (each send's `variables`, "
            "oldest first) and `count`. Needs `user_id` and `template`; not with `send_at`. The answer "
            "is then a DigestedSend (`status: digested`, `digest_id`)."
        ),
    ] = None
    escalate: Annotated[
        Escalation | None,
        Field(
            description="inapp only: if the notification is still unread after `after_seconds`, send the "
            "same content on the first of `channels` the user can be reached on (a new notification "
            "with `escalated_from` set). Nothing is sent if it was read in time."
        ),
    ] = None

    # Field validators (not one model validator) so that errors point at the offending field;
    # `channel` is declared first, hence already validated and present in `info.data`.
    @field_validator("recipient")
    @classmethod
    def _recipient_fits_channel(cls, recipient: str | None, info: ValidationInfo) -> str | None:
        channel = info.data.get("channel")
        return recipient if channel is None or recipient is None else channel_address(channel, recipient)

    @field_validator("topic")
    @classmethod
    def _topic_alone(cls, topic: str | None, info: ValidationInfo) -> str | None:
        if topic is not None and (info.data.get("recipient") or info.data.get("user_id")):
            raise ValueError("give either `topic` or `recipient`/`user_id`, not both")
        if topic is not None and info.data.get("channel") is Channel.WEBHOOK:
            raise ValueError("webhook sends go to your URL (`recipient`), not to a topic's subscribers")
        return topic

    @field_validator("callback_url")
    @classmethod
    def _callback_is_a_url(cls, url: str | None) -> str | None:
        return None if url is None else webhook_url(url)

    @field_validator("content")
    @classmethod
    def _content_fits_channel(cls, content: Content | None, info: ValidationInfo) -> Content | None:
        channel = info.data.get("channel")
        if content is not None and channel is not None:
            check_content_fits(channel, content)
        return content

    @field_validator("digest")
    @classmethod
    def _digest_has_what_it_needs(cls, digest: DigestSpec | None, info: ValidationInfo) -> DigestSpec | None:
        # A field that failed its own validation is absent from `info.data`: its error says enough.
        if digest is not None:
            if info.data.get("topic") is not None:
                raise ValueError("a digest collects one user's sends: not with `topic`")
            user_id = info.data.get("user_id")
            if info.data.get("channel") is Channel.INAPP:
                user_id = user_id or info.data.get("recipient")  # `_inapp_user` copies it over.
            if "user_id" in info.data and user_id is None:
                raise ValueError("a digest needs `user_id`")
            if "template" in info.data and info.data["template"] is None:
                raise ValueError("a digest needs `template`")
            if info.data.get("send_at") is not None:
                raise ValueError("a digest is sent when its window closes: leave out `send_at`")
        return digest

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        refuse_nul_characters(data)
        return data

    @field_validator("escalate")
    @classmethod
    def _escalate_inapp_only(cls, escalate: Escalation | None, info: ValidationInfo) -> Escalation | None:
        channel = info.data.get("channel")
        if escalate is not None and channel is not None and channel is not Channel.INAPP:
            raise ValueError("only an inapp notification can escalate (it escalates when left unread)")
        return escalate

    @field_validator("user_id")
    @classmethod
    def _inapp_user_is_the_recipient(cls, user_id: str | None, info: ValidationInfo) -> str | None:
        recipient = info.data.get("recipient")
        inapp = info.data.get("channel") is Channel.INAPP
        if inapp and recipient is not None and user_id is not None and recipient != user_id:
            raise ValueError("for inapp, `recipient` is the user id: give one, or the same in both")
        return user_id

    @model_validator(mode="after")
    def _inapp_user(self) -> "NotificationRequest":
        """An inapp notification's recipient is its user: either field gives both."""
        if self.channel is Channel.INAPP:
            self.recipient = self.user_id = self.recipient or self.user_id
        return self

    @model_validator(mode="after")
    def _complete(self) -> "NotificationRequest":
        if (self.template is None) == (self.content is None):
            raise ValueError("give either `template` (with its `variables`) or `content`")
        if self.variables and self.template is None:
            raise ValueError("`variables` are for a `template`")
        if self.recipient is None and self.user_id is None and self.topic is None:
            raise ValueError(
                "give `recipient`, or a `user_id` whose recipient profile has an address, or a `topic`"
            )
        return self


def check_content_fits(channel: Channel, content: Content) -> None:
    """What each channel needs of content; raises ValueError."""
    if channel is Channel.EMAIL and not content.subject:
        raise ValueError("subject is required for email")
    if channel in _PHONE_CHANNELS and len(content.body) > _MAX_SMS_BODY:
        raise ValueError(f"body is limited to {_MAX_SMS_BODY} characters for sms and whatsapp")


class DeliveryAttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    started_at: datetime
    finished_at: datetime
    provider: str
    outcome: str
    error: str | None
    details: dict[str, Any] = Field(
        description="What the provider reported, e.g. an SMS's `segments` and `encoding`, an email's "
        "`message_id`; empty for failed attempts."
    )


class EscalationStatus(StrEnum):
    PENDING = "pending"
    ESCALATED = "escalated"  # Sent again on `channel` as `notification_id`.
    NOT_NEEDED = "not_needed"  # Read in time.
    SKIPPED = "skipped"  # No channel could take it, or the notification was cancelled; see `reason`.


class EscalationOut(BaseModel):
    """An inapp notification's escalation plan and what became of it."""

    after_seconds: int
    channels: list[Channel]
    status: EscalationStatus
    due_at: datetime = Field(description="When it escalates if still unread.")
    decided_at: datetime | None = None
    channel: Channel | None = Field(None, description="Where it went, once `escalated`.")
    notification_id: uuid.UUID | None = Field(None, description="The escalated notification, once sent.")
    reason: str | None = Field(
        None,
        description="Why it was `skipped` or `not_needed`; once `escalated`, why the channels listed before "
        "`channel` were passed over.",
    )


class NotificationOut(BaseModel):
    """A notification as listed (without its attempts)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel: Channel
    priority: Priority
    recipient: str
    user_id: str | None
    status: Status
    content: Content
    template: str | None = Field(None, description="The template the content was rendered from.")
    metadata: dict[str, Any] = Field(validation_alias="meta")
    callback_url: str | None = Field(None, description="Where status events are POSTed.")
    callback_for: uuid.UUID | None = Field(
        None, description="On a status callback: the notification whose status change it reports."
    )
    escalation: EscalationOut | None = Field(None, description="inapp: its escalation, if it has one.")
    escalated_from: uuid.UUID | None = Field(
        None, description="On an escalation: the unread inapp notification it escalates."
    )
    created_at: datetime
    scheduled_for: datetime | None
    timezone: str | None
    local_scheduled_time: datetime | None = Field(None, description="`scheduled_for` in `timezone`.")
    deferred_reason: str | None
    schedule_id: uuid.UUID | None = Field(None, description="The recurring schedule that sent it, if any.")
    fanout_id: uuid.UUID | None = Field(None, description="The topic send (fan-out) that created it, if any.")
    attempt_count: int
    next_attempt_at: datetime | None = Field(description="When a `retrying` notification is tried again.")
    delivered_at: datetime | None
    failed_at: datetime | None
    read_at: datetime | None
    last_error: str | None

    @model_validator(mode="after")
    def _local_time(self) -> "NotificationOut":
        if self.scheduled_for is not None and self.timezone:
            self.local_scheduled_time = self.scheduled_for.astimezone(ZoneInfo(self.timezone))
        return self


class NotificationDetail(NotificationOut):
    attempts: list[DeliveryAttemptOut]


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last.")


MAX_BATCH = 1000


class BatchMode(StrEnum):
    BEST_EFFORT = "best_effort"
    ALL_OR_NOTHING = "all_or_nothing"


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "mode": "best_effort",
                    "notifications": [
                        {
                            "channel": "email",
                            "user_id": "u-1",
                            "template": "welcome",
                            "variables": {"name": "Ada"},
                        },
                        {
                            "channel": "sms",
                            "recipient": "+14155550100",
                            "content": {"body": "Your order shipped"},
                        },
                    ],
                }
            ]
        },
    )

    mode: Annotated[
        BatchMode,
        Field(
            description="`best_effort`: accept the valid items, report the others; `all_or_nothing`: "
            "accept all or, if any item is refused, none."
        ),
    ] = BatchMode.BEST_EFFORT
    # Plain objects, each validated on its own, so that one bad item is reported with its index
    # instead of failing the whole body.
    notifications: Annotated[
        list[dict[str, Any]],
        Field(
            min_length=1,
            max_length=MAX_BATCH,
            description=f"1 to {MAX_BATCH} notifications, each as the body of POST /v1/notifications.",
            json_schema_extra={"items": {"$ref": "#/components/schemas/NotificationRequest"}},
        ),
    ]


class ItemError(BaseModel):
    """Why one item of a batch was refused (problem details, as for a single send)."""

    status: int = Field(description="422 (invalid) or 429 (rate limit).")
    title: str
    detail: str
    errors: list[dict[str, Any]] = Field(description="Field-level errors, as in every 422.")
    retry_after: int | None = Field(None, description="For 429: seconds until the rate limit resets.")


class BatchItemResult(BaseModel):
    index: int
    id: uuid.UUID | None = None
    status: Status | None = None
    error: ItemError | None = None


class BatchResponse(BaseModel):
    accepted: int
    refused: int
    results: list[BatchItemResult] = Field(description="One per item, in the order given.")
