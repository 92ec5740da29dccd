"""An audit entry's diff: only what changed, secrets redacted at any depth, every value bounded."""

import json
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel

from pulse.audit.changes import MAX_BYTES, MAX_ITEMS, MAX_TEXT, REDACTED, diff


class Profile(BaseModel):
    id: uuid.UUID
    timezone: str
    updated_at: datetime


def test_an_update_keeps_only_the_fields_that_changed() -> None:
    same = uuid.uuid4()
    before = Profile(id=same, timezone="UTC", updated_at=datetime(2026, 1, 1, tzinfo=UTC))
    after = {"id": same, "timezone": "Europe/Paris", "updated_at": datetime(2026, 1, 2, tzinfo=UTC)}

    assert diff(before, after) == {
        "before": {"timezone": "UTC", "updated_at": "2026-01-01T00:00:00Z"},
        "after": {"timezone": "Europe/Paris", "updated_at": "2026-01-02T00:00:00Z"},
    }


def test_a_creation_or_deletion_shows_every_field() -> None:
    assert diff(None, {"name": "welcome"}) == {"after": {"name": "welcome"}}
    assert diff({"name": "welcome"}, None) == {"before": {"name": "welcome"}}
    assert diff(None, None) is None


def test_secrets_are_redacted_at_any_depth_and_urls_lose_their_credentials() -> None:
    changes = diff(
        None,
        {
            "webhook_secret": "whsec_abc",
            "smtp": {"password": "hunter2", "host": "mail.example.com"},
            "push_tokens": ["device-1"],
            "notification": {
                "recipient": "https://me:pass@hooks.example.com/in?token=t0k3n",
                "callback_url": "https://example.com/status",
            },
        },
    )

    text = json.dumps(changes)
    for secret in ("whsec_abc", "hunter2", "device-1", "pass@", "t0k3n"):
        assert secret not in text
    after = changes["after"] if changes else {}
    assert after["webhook_secret"] == after["smtp"]["password"] == after["push_tokens"] == REDACTED
    assert after["notification"]["recipient"] == "https://hooks.example.com/[redacted]"
    assert after["notification"]["callback_url"] == "https://example.com/[redacted]"


def test_big_values_are_cut() -> None:
    nested: dict[str, object] = {"leaf": 1}
    for _ in range(10):
        nested = {"down": nested}
    changes = diff(
        None,
        {
            "body": "x" * 100_000,
            "variables": list(range(1000)),
            "data": {f"k{number}": number for number in range(1000)},
            "nested": nested,
        },
    )

    after = changes["after"] if changes else {}
    assert after["body"] == "x" * MAX_TEXT + "…"
    assert after["variables"] == [*range(MAX_ITEMS), f"… {1000 - MAX_ITEMS} more"]
    assert len(after["data"]) == MAX_ITEMS + 1 and after["data"]["…"] == f"{1000 - MAX_ITEMS} more"
    assert "leaf" not in json.dumps(after["nested"])
    assert len(json.dumps(changes)) < 10_000


def test_a_diff_too_big_even_when_cut_keeps_only_the_names_of_the_fields() -> None:
    wide = {
        f"k{a}": {f"k{b}": {f"k{c}": "x" * 1000 for c in range(30)} for b in range(30)} for a in range(30)
    }

    changes = diff({"data": {}, "name": "a"}, {"data": wide, "name": "b"})

    assert changes == {"changed": ["data", "name"], "truncated": True}
    assert len(json.dumps(diff(None, {"data": {"k": "x" * 1000}}))) < MAX_BYTES
