"""The template API's request and response bodies."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationInfo, field_validator

from pulse.inputs import JsonObject
from pulse.templates.formatting import normalize_locale
from pulse.vocabulary import Channel, Priority

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
MAX_SUBJECT_SOURCE = 2000
MAX_SOURCE = 100_000
MAX_VARIABLES = 100


# The documented example of a template's content; TemplateIn's adds the name.
_EXAMPLE: dict[str, JsonValue] = {
    "channel": "email",
    "subject": "Welcome, {{ first_name }}",
    "body": "Hello {{ first_name }}, your plan costs {{ price|currency('EUR') }} a month "
    "from {{ start|format_date('long') }}.",
    "html": "<p>Hello {{ first_name }},</p><p>your plan costs {{ price|currency('EUR') }} a month.</p>",
    "variables": ["first_name", "price", "start"],
    "description": "Sent when an account is created.",
}


class TemplateContent(BaseModel):
    """Everything a template is but its name."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    channel: Channel
    subject: Annotated[
        str | None,
        # Validated when omitted too, so that an email template without one is refused.
        Field(
            min_length=1,
            max_length=MAX_SUBJECT_SOURCE,
            validate_default=True,
            description="Jinja2 source; required for email.",
        ),
    ] = None
    body: Annotated[
        str, Field(min_length=1, max_length=MAX_SOURCE, description="Jinja2 source of the plain-text body.")
    ]
    html: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_SOURCE,
            description="Jinja2 source of the HTML alternative (email); variables are HTML-escaped.",
        ),
    ] = None
    variables: Annotated[
        list[Annotated[str, Field(pattern=VARIABLE_PATTERN)]],
        Field(
            max_length=MAX_VARIABLES,
            description="Names every send must give (a send missing one is refused with 422); others the "
            "template uses may be optional (`{% if coupon is defined %}`, `{{ nickname|default(name) }}`).",
        ),
    ] = []
    description: Annotated[str | None, Field(max_length=1000)] = None
    priority: Annotated[
        Priority | None, Field(description="Priority of sends that name none; null: the usual default.")
    ] = None
    active: Annotated[bool, Field(description="Inactive templates can be previewed but not sent.")] = True

    @field_validator("variables")
    @classmethod
    def _dedupe(cls, names: list[str]) -> list[str]:
        return list(dict.fromkeys(names))

    @field_validator("subject")
    @classmethod
    def _subject_for_email(cls, subject: str | None, info: ValidationInfo) -> str | None:
        if subject is None and info.data.get("channel") is Channel.EMAIL:
            raise ValueError("subject is required for email")
        return subject


class TemplateIn(TemplateContent):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "welcome", **_EXAMPLE}]})

    name: Annotated[
        str,
        Field(
            pattern=NAME_PATTERN,
            description="Unique per tenant; letters, digits, `_`, `-` and `.`, 1 to 100 characters, "
            "starting with a letter or digit. Sends name the template by it.",
        ),
    ]


class TemplateReplacement(TemplateContent):
    name: Annotated[
        str | None,
        Field(description="Optional, as the path names the template; if given, it must be the path's."),
    ] = None


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    channel: Channel
    subject: str | None
    body: str
    html: str | None
    variables: list[str] = Field(description="Names every send must give.")
    description: str | None
    priority: Priority | None
    active: bool
    version: int = Field(description="1 when created, incremented by every update.")
    created_at: datetime
    updated_at: datetime


class TemplatePage(BaseModel):
    items: list[TemplateOut]
    total: int = Field(description="How many templates match the filters, on all pages.")
    page: int
    size: int


class PreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"variables": {"first_name": "Ada", "price": 9.5, "start": "2026-03-01"}, "locale": "fr-FR"}
            ]
        },
    )

    variables: Annotated[JsonObject, Field(description="Values for the template's variables.")] = {}
    locale: Annotated[
        str | None,
        Field(
            max_length=35,
            description="Locale that numbers, amounts and dates are formatted for (`fr_FR` or `fr-FR`); "
            "default `en`.",
        ),
    ] = None

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, locale: str | None) -> str | None:
        return None if locale is None else normalize_locale(locale)


class PreviewOut(BaseModel):
    subject: str | None = None
    body: str
    html: str | None = None
    version: int = Field(description="The version of the template that was rendered.")
