"""Recipient profiles: what a PUT body accepts and how it is normalised, what a send learns from a
profile, and how profiles are stored and looked up (real PostgreSQL, rolled back)."""

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, time
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event
from sqlalchemy.orm import Session

from pulse.errors import NotFound
from pulse.recipients.schemas import MAX_PUSH_TOKENS, RecipientIn
from pulse.recipients.service import (
    Profile,
    address_for,
    delete_recipient,
    find_recipients,
    get_recipient,
    opted_out,
    policy_for,
    put_recipient,
)
from pulse.timing.policy import TenantPolicy
from pulse.timing.quiet_hours import QuietHours
from pulse.vocabulary import Channel
from tests.conftest import Tenant

NIGHT = QuietHours(time(22), time(8))


def profile(user_id: str = "u-1", **fields: Any) -> Profile:
    """A profile as the send path gets it from find_recipients."""
    empty = RecipientIn().model_dump()
    now = datetime.now(UTC)
    return Profile(user_id=user_id, **{**empty, **fields}, created_at=now, updated_at=now)


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as raised:
        RecipientIn.model_validate(body)
    [error] = raised.value.errors()
    return dict(error)


# --- the PUT body ---------------------------------------------------------------------------------


def test_an_empty_body_is_a_profile_with_nothing_set() -> None:
    empty = RecipientIn.model_validate({})
    assert empty.model_dump() == {
        "email": None,
        "phone": None,
        "push_tokens": [],
        "timezone": None,
        "quiet_hours": None,
        "locale": None,
        "preferences": {},
    }


def test_addresses_are_normalised() -> None:
    given = RecipientIn.model_validate(
        {"email": "Ada@EXAMPLE.com", "phone": "+1 (415) 555-0100", "push_tokens": ["t-2", "t-1", "t-2"]}
    )
    assert given.email == "Ada@example.com"  # email-validator lower-cases the domain only.
    assert given.phone == "+14155550100"
    assert given.push_tokens == ["t-2", "t-1"]  # Duplicates dropped, order kept.


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("22:00-08:00", "22:00-08:00"),
        (" 22:00 - 07:30 ", "22:00-07:30"),
        ("22:00:00-08:00:00", "22:00-08:00"),
        ("12:00:00-12:00:05", "12:00-12:00:05"),
        ("OFF", "off"),
    ],
)
def test_quiet_hours_are_stored_in_one_spelling(text: str, stored: str) -> None:
    assert RecipientIn.model_validate({"quiet_hours": text}).quiet_hours == stored


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("fr-FR", "fr_FR"),
        ("fr_FR", "fr_FR"),
        ("pt-br", "pt_BR"),
        ("en", "en"),
        ("es-419", "es_419"),
        ("zh-Hant-TW", "zh_Hant_TW"),
        ("zh_TW", "zh_Hant_TW"),  # Babel's full name of the same locale.
    ],
)
def test_locales_are_stored_in_babels_spelling(text: str, stored: str) -> None:
    assert RecipientIn.model_validate({"locale": text}).locale == stored


def test_a_valid_profile_keeps_its_time_zone_and_preferences() -> None:
    given = RecipientIn.model_validate(
        {"timezone": "America/New_York", "preferences": {"sms": False, "email": True}}
    )
    assert given.timezone == "America/New_York"
    assert given.preferences == {"sms": False, "email": True}


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        pytest.param({"email": "not-an-email"}, ("email",), "valid email address", id="email"),
        pytest.param({"phone": "4155550100"}, ("phone",), "phone number", id="phone-without-country"),
        pytest.param({"phone": "+1415555"}, ("phone",), "phone number", id="phone-too-short"),
        pytest.param({"push_tokens": ["ok", "with space"]}, ("push_tokens", 1), "device token", id="token"),
        pytest.param({"push_tokens": [""]}, ("push_tokens", 0), "device token", id="empty-token"),
        pytest.param({"push_tokens": ["a\x00b"]}, ("push_tokens", 0), "NUL", id="token-with-nul"),
        pytest.param({"timezone": "Mars/Olympus"}, ("timezone",), "unknown time zone", id="timezone"),
        pytest.param({"timezone": "../etc/passwd"}, ("timezone",), "unknown time zone", id="tz-path"),
        pytest.param({"quiet_hours": "night"}, ("quiet_hours",), "22:00-08:00", id="quiet-hours"),
        pytest.param({"quiet_hours": "25:00-08:00"}, ("quiet_hours",), "22:00-08:00", id="hour-25"),
        pytest.param({"quiet_hours": "08:00-08:00"}, ("quiet_hours",), "same time", id="empty-window"),
        pytest.param({"quiet_hours": "22:00+02:00-08:00"}, ("quiet_hours",), "UTC offset", id="offset"),
        pytest.param({"locale": "xx"}, ("locale",), "unknown locale", id="locale"),
        pytest.param({"locale": "en-ZZ"}, ("locale",), "unknown locale", id="locale-unknown-region"),
        pytest.param({"locale": "not a locale"}, ("locale",), "unknown locale", id="locale-garbage"),
        pytest.param({"locale": ""}, ("locale",), "unknown locale", id="locale-empty"),
        pytest.param(
            {"preferences": {"email": True, "pigeon": False}},
            ("preferences",),
            "unknown channel 'pigeon'",
            id="unknown-channel",
        ),
        pytest.param({"preferences": {"sms": "no"}}, ("preferences", "sms"), "boolean", id="not-bool"),
        pytest.param({"nickname": "Ada"}, ("nickname",), "Extra inputs", id="unknown-field"),
    ],
)
def test_invalid_fields_are_refused_at_their_location(
    body: dict[str, Any], loc: tuple[str | int, ...], message: str
) -> None:
    error = error_of(body)
    assert error["loc"] == loc
    assert message in error["msg"]


def test_at_most_a_score_of_push_tokens() -> None:
    tokens = [f"token-{n}" for n in range(MAX_PUSH_TOKENS)]
    assert RecipientIn.model_validate({"push_tokens": tokens}).push_tokens == tokens
    assert error_of({"push_tokens": [*tokens, "one-more"]})["loc"] == ("push_tokens",)


# --- what a send learns from a profile -----------------------------------------------------------


def test_each_channel_is_addressed_from_its_field() -> None:
    ada = profile(
        "ada", email="ada@example.com", phone="+14155550100", push_tokens=["newest-phone", "old-tablet"]
    )
    assert {channel: address_for(ada, channel) for channel in Channel} == {
        Channel.EMAIL: "ada@example.com",
        Channel.SMS: "+14155550100",
        Channel.WHATSAPP: "+14155550100",
        Channel.PUSH: "newest-phone",
        Channel.INAPP: "ada",
        Channel.WEBHOOK: None,  # A webhook's URL is the sender's, never in a profile.
    }


def test_a_profile_without_an_address_for_the_channel_gives_none() -> None:
    bare = profile("bob")
    assert [address_for(bare, channel) for channel in Channel if channel is not Channel.INAPP] == [None] * 5
    assert address_for(bare, Channel.INAPP) == "bob"


def test_only_a_channel_set_to_false_is_opted_out() -> None:
    recipient = profile(preferences={"sms": False, "email": True})
    assert opted_out(recipient, Channel.SMS)
    assert not opted_out(recipient, Channel.EMAIL)
    assert not opted_out(recipient, Channel.PUSH)  # Not named: opted in.


def test_the_profiles_time_zone_and_quiet_hours_override_the_tenants() -> None:
    tenant = TenantPolicy(timezone="Europe/Paris", quiet_hours=NIGHT)
    assert policy_for(profile(), tenant) == tenant
    assert policy_for(profile(timezone="Asia/Tokyo", quiet_hours="23:00-06:30"), tenant) == replace(
        tenant, timezone="Asia/Tokyo", quiet_hours=QuietHours(time(23), time(6, 30))
    )
    assert policy_for(profile(quiet_hours="off"), tenant) == replace(tenant, quiet_hours=None)


# --- storage ---------------------------------------------------------------------------------------


@pytest.fixture
def statements(session: Session) -> Iterator[list[str]]:
    """The SQL statements the session runs from now on."""
    seen: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", record)
    yield seen
    event.remove(connection, "before_cursor_execute", record)


def test_a_put_creates_then_replaces_the_whole_profile(session: Session, tenant: Tenant) -> None:
    full = RecipientIn(email="ada@example.com", push_tokens=["t"], locale="fr-FR", preferences={"sms": False})
    created, was_created = put_recipient(session, tenant_id=tenant.id, user_id="ada", profile=full)
    assert was_created
    assert (created.email, created.push_tokens, created.locale) == ("ada@example.com", ["t"], "fr_FR")

    replaced, was_created = put_recipient(
        session, tenant_id=tenant.id, user_id="ada", profile=RecipientIn(phone="+14155550100")
    )
    assert not was_created
    # The copy the session already held (identity map) shows the replacement, not the old profile.
    assert replaced is created
    assert get_recipient(session, tenant_id=tenant.id, user_id="ada") is replaced
    assert (replaced.email, replaced.phone, replaced.push_tokens, replaced.locale, replaced.preferences) == (
        None,
        "+14155550100",
        [],
        None,
        {},
    )


def test_a_missing_profile_is_not_found_and_cannot_be_deleted(session: Session, tenant: Tenant) -> None:
    with pytest.raises(NotFound):
        get_recipient(session, tenant_id=tenant.id, user_id="nobody")
    with pytest.raises(NotFound):
        delete_recipient(session, tenant_id=tenant.id, user_id="nobody")


def test_profiles_are_found_in_one_query(
    session: Session, tenant: Tenant, statements: list[str], make_tenant: Callable[..., Tenant]
) -> None:
    for user_id in ("ada", "bob", "cy"):
        put_recipient(session, tenant_id=tenant.id, user_id=user_id, profile=RecipientIn())
    stranger = make_tenant().id
    put_recipient(session, tenant_id=stranger, user_id="dee", profile=RecipientIn())
    statements.clear()

    found = find_recipients(session, tenant.id, ["ada", "cy", "ada", "dee", "unknown"])

    assert sorted(found) == ["ada", "cy"]  # "dee" is another tenant's.
    assert all(found[user_id].user_id == user_id for user_id in found)
    assert len(statements) == 1
    assert find_recipients(session, tenant.id, []) == {}
    assert len(statements) == 1


def test_found_profiles_hold_what_was_stored(session: Session, tenant: Tenant) -> None:
    full = RecipientIn.model_validate(
        {
            "email": "ada@example.com",
            "phone": "+14155550100",
            "push_tokens": ["phone", "tablet"],
            "timezone": "Asia/Tokyo",
            "quiet_hours": "23:00-06:30",
            "locale": "fr-FR",
            "preferences": {"sms": False},
        }
    )
    for user_id, stored in (("ada", full), ("bob", RecipientIn())):
        put_recipient(session, tenant_id=tenant.id, user_id=user_id, profile=stored)

    found = find_recipients(session, tenant.id, ["ada", "bob"])

    for user_id in ("ada", "bob"):
        saved = get_recipient(session, tenant_id=tenant.id, user_id=user_id)
        assert found[user_id]._asdict() == {name: getattr(saved, name) for name in Profile._fields}, user_id
    assert (found["bob"].push_tokens, found["bob"].preferences) == ([], {})
