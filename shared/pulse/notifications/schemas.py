"""The notification API's request and response bodies."""

import uuid
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pulse.channels.ssrf import RefusedUrl, split_url
from pulse.vocabulary import Channel, Priority, Status

_MAX_SUBJECT = 998  # RFC 5322's line limit: a longer subject cannot be sent as one header line.
_MAX_SMS_BODY = 1600  # Twilio refuses longer bodies (it splits the rest into segments itself).
_PHONE_CHANNELS = (Channel.SMS, Channel.WHATSAPP)
_MAX_RECIPIENT = 2048
_MAX_DEVICE_TOKEN = 4096  # FCM registration tokens are far shorter; anything longer is not one.


class Content(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str | None, Field(max_length=_MAX_SUBJECT, description="Required for email.")] = None
    body: Annotated[
        str,
        Field(min_length=1, description="Plain-text body (at most 1600 characters for sms and whatsapp)."),
    ]
    html: Annotated[str | None, Field(description="Optional HTML alternative (email).")] = None
    data: Annotated[dict[str, Any] | None, Field(description="Structured payload (push, webhook).")] = None


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
        str,
        Field(
            min_length=1,
            max_length=_MAX_DEVICE_TOKEN,
            description="Address for the channel: an email address, for sms and whatsapp a phone number "
            "with its country code (normalised to E.164; a `whatsapp:` prefix is accepted), for push a "
            "device token (FCM registration token, up to 4096 characters; others up to 2048).",
        ),
    ]
    user_id: Annotated[str | None, Field(max_length=255, description="Your id of the end user.")] = None
    content: Content
    priority: Priority = Priority.NORMAL
    send_at: Annotated[
        datetime | None,
        Field(
            description="When to send (ISO 8601); naive values are read in `timezone`; past ones mean now."
        ),
    ] = None
    timezone: Annotated[
        str | None,
        Field(description="The recipient's IANA time zone (default: the tenant's, else UTC).", max_length=64),
    ] = None
    respect_quiet_hours: Annotated[
        bool, Field(description="Wait for the recipient's quiet hours to end (`critical` never waits).")
    ] = True
    metadata: Annotated[dict[str, Any], Field(description="Stored and returned as given.")] = {}

    # Field validators (not one model validator) so that errors point at the offending field;
    # `channel` is declared first, hence already validated and present in `info.data`.
    @field_validator("recipient")
    @classmethod
    def _recipient_fits_channel(cls, recipient: str, info: ValidationInfo) -> str:
        if info.data.get("channel") is not Channel.PUSH and len(recipient) > _MAX_RECIPIENT:
            raise ValueError(f"at most {_MAX_RECIPIENT} characters")
        if info.data.get("channel") is Channel.EMAIL:
            try:
                return validate_email(recipient, check_deliverability=False).normalized
            except EmailNotValidError as error:
                raise ValueError(f"not a valid email address: {error}") from error
        if info.data.get("channel") in _PHONE_CHANNELS:
            return _e164(recipient)
        if info.data.get("channel") is Channel.PUSH:
            return _device_token(recipient)
        if info.data.get("channel") is Channel.WEBHOOK:
            return _webhook_url(recipient)
        return recipient

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError) as error:
                raise ValueError(
                    f"unknown time zone {name!r} (use an IANA name like Europe/Paris)"
                ) from error
        return name

    @field_validator("content")
    @classmethod
    def _content_fits_channel(cls, content: Content, info: ValidationInfo) -> Content:
        if info.data.get("channel") is Channel.EMAIL and not content.subject:
            raise ValueError("subject is required for email")
        if info.data.get("channel") in _PHONE_CHANNELS and len(content.body) > _MAX_SMS_BODY:
            raise ValueError(f"body is limited to {_MAX_SMS_BODY} characters for sms and whatsapp")
        return content


def _e164(recipient: str) -> str:
    """A phone number in E.164 (`+14155550100`); a `whatsapp:` prefix, as Twilio writes it, is dropped."""
    number = recipient.strip().removeprefix("whatsapp:").strip()
    try:
        parsed = phonenumbers.parse(number, None)  # No default region: the country code is required.
    except phonenumbers.NumberParseException as error:
        raise ValueError(
            "not a phone number in international format (+, country code, number: +14155550100)"
        ) from error
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _device_token(recipient: str) -> str:
    """A push device token (FCM registration token): opaque, but never blank, spaced or huge."""
    if len(recipient) > _MAX_DEVICE_TOKEN:
        raise ValueError(f"a device token is at most {_MAX_DEVICE_TOKEN} characters")
    if not recipient or any(char.isspace() for char in recipient):
        raise ValueError("not a device token: it must be non-empty and contain no whitespace")
    return recipient


def _webhook_url(recipient: str) -> str:
    """An absolute http(s) URL (which addresses it may reach is the SSRF guard's business)."""
    try:
        split_url(recipient.strip())
    except RefusedUrl as error:
        raise ValueError(f"not a webhook URL: {error}") from error
    return recipient.strip()


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
    metadata: dict[str, Any] = Field(validation_alias="meta")
    created_at: datetime
    scheduled_for: datetime | None
    timezone: str | None
    local_scheduled_time: datetime | None = Field(None, description="`scheduled_for` in `timezone`.")
    deferred_reason: str | None
    schedule_id: uuid.UUID | None = Field(None, description="The recurring schedule that sent it, if any.")
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
