"""Idempotency-Key fingerprints survive upgrades that add optional fields to the send body."""

import hashlib

from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import request_fingerprint

# How the gateway before digests and escalation serialised this send (fields sorted, compact).
STORED_BEFORE_THE_UPGRADE = (
    '{"callback_url":null,"channel":"email","content":{"body":"b","data":null,"html":null,"subject":"s"},'
    '"metadata":{},"priority":null,"recipient":"a@example.com","respect_quiet_hours":true,"send_at":null,'
    '"template":null,"timezone":null,"user_id":null,"variables":{}}'
)


def _email(**extra: object) -> NotificationRequest:
    body = {"channel": "email", "recipient": "a@example.com", "content": {"subject": "s", "body": "b"}}
    return NotificationRequest.model_validate({**body, **extra})


def test_a_send_without_the_later_fields_keeps_the_fingerprint_stored_before_they_existed() -> None:
    assert request_fingerprint(_email()) == hashlib.sha256(STORED_BEFORE_THE_UPGRADE.encode()).hexdigest()


def test_a_later_field_when_given_changes_the_fingerprint() -> None:
    digest = {"key": "comments", "window_seconds": 60}
    with_digest = _email(user_id="u-1", template=None)
    assert request_fingerprint(with_digest) != request_fingerprint(
        NotificationRequest.model_validate(
            {"channel": "email", "user_id": "u-1", "template": "t", "digest": digest}
        )
    )
