"""The recipient API's request and response bodies."""

from datetime import datetime, time
from typing import Annotated

from babel import Locale, UnknownLocaleError
from babel.core import parse_locale
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, field_validator

from pulse.addresses import device_token, email_address, phone_number
from pulse.timing.clock import TimeZoneName
from pulse.timing.quiet_hours import OFF, QuietHours
from pulse.vocabulary import Channel

MAX_PUSH_TOKENS = 20  # A person's devices; a longer list is a bug on the caller's side.
_CHANNEL_NAMES = frozenset(Channel)


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL; refused here, it would otherwise fail the INSERT with a 500.
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


DeviceToken = Annotated[str, AfterValidator(device_token), AfterValidator(_storable)]


class RecipientIn(BaseModel):
    """A recipient profile; a PUT replaces the whole profile, so an omitted field is cleared."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "phone": "+14155550100",
                    "push_tokens": ["fcm-registration-token-of-adas-phone"],
                    "timezone": "Europe/Paris",
                    "quiet_hours": "22:00-07:30",
                    "locale": "fr-FR",
                    "preferences": {"sms": False, "whatsapp": False},
                }
            ]
        },
    )

    email: Annotated[
        str | None, Field(description="Email address, stored normalised (domain lower-cased).")
    ] = None
    phone: Annotated[
        str | None,
        Field(
            max_length=64,
            description="Phone number with its country code, for sms and whatsapp; stored in E.164.",
        ),
    ] = None
    push_tokens: Annotated[
        list[DeviceToken],
        Field(
            max_length=MAX_PUSH_TOKENS,
            description="Push device tokens, most recent device first: push sends go to the first. "
            "Duplicates are dropped.",
        ),
    ] = []
    timezone: Annotated[
        TimeZoneName | None,
        Field(max_length=64, description="IANA time zone (e.g. Europe/Paris); null: the tenant's."),
    ] = None
    quiet_hours: Annotated[
        str | None,
        Field(
            max_length=32,
            description="Daily window of local time in which non-critical sends wait, `HH:MM-HH:MM` "
            "(may cross midnight), or `off` for none; null: the tenant's.",
        ),
    ] = None
    locale: Annotated[
        str | None,
        Field(
            max_length=35,
            description="Language and optional region, `fr-FR` or `fr_FR`; stored in Babel's "
            "spelling (`fr_FR`).",
        ),
    ] = None
    preferences: Annotated[
        dict[str, StrictBool],
        Field(
            description="Per channel: `false` opts the recipient out of it (`critical` sends "
            "excepted); a channel not named is opted in.",
        ),
    ] = {}

    @field_validator("email")
    @classmethod
    def _valid_email(cls, email: str | None) -> str | None:
        return None if email is None else email_address(email)

    @field_validator("phone")
    @classmethod
    def _valid_phone(cls, phone: str | None) -> str | None:
        return None if phone is None else phone_number(phone)

    @field_validator("push_tokens")
    @classmethod
    def _distinct_tokens(cls, tokens: list[str]) -> list[str]:
        return list(dict.fromkeys(tokens))

    @field_validator("quiet_hours")
    @classmethod
    def _valid_quiet_hours(cls, text: str | None) -> str | None:
        if text is None:
            return None
        window = QuietHours.parse(text)
        if window is None:
            return OFF
        if window.start.tzinfo is not None or window.end.tzinfo is not None:
            # Quiet hours are read on the recipient's wall clock; an offset would contradict `timezone`.
            raise ValueError("quiet hours are local times: give no UTC offset (set `timezone` instead)")
        return f"{_clock(window.start)}-{_clock(window.end)}"

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, text: str | None) -> str | None:
        return None if text is None else _babel_locale(text)

    @field_validator("preferences")
    @classmethod
    def _known_channels(cls, preferences: dict[str, bool]) -> dict[str, bool]:
        unknown = [name for name in preferences if name not in _CHANNEL_NAMES]
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            raise ValueError(f"unknown channel {names} (channels: {', '.join(Channel)})")
        return preferences


class RecipientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: str = Field(description="Your id of the end user (`user_id` in sends).")
    email: str | None
    phone: str | None = Field(description="E.164.")
    push_tokens: list[str]
    timezone: str | None = Field(description="IANA time zone; null: the tenant's.")
    quiet_hours: str | None = Field(description="`HH:MM-HH:MM` or `off`; null: the tenant's.")
    locale: str | None = Field(description="Babel's spelling, e.g. `fr_FR`.")
    preferences: dict[str, bool] = Field(description="`{channel: false}` opts out of a channel.")
    created_at: datetime
    updated_at: datetime


def _babel_locale(text: str) -> str:
    """`text` (`fr-FR`, `fr_FR`, `pt_br`, `zh-Hant-TW`) as Babel spells it (`fr_FR`); ValueError if
    Babel does not know it."""
    refused = ValueError(f"unknown locale {text!r} (use a language and optional region, like fr or fr-FR)")
    identifier = text.strip().replace("-", "_")
    try:
        language, territory, *_ = parse_locale(identifier)
        locale = Locale.parse(identifier)
    except (ValueError, UnknownLocaleError) as error:
        raise refused from error
    # Babel answers some codes with a different locale (`en_ZZ` as en_US, `und` as en_US): refused,
    # since the profile would then name a language or region the caller did not ask for.
    if locale.language != language or (territory and locale.territory != territory):
        raise refused
    return str(locale)


def _clock(moment: time) -> str:
    return moment.isoformat(timespec="minutes" if not (moment.second or moment.microsecond) else "auto")
