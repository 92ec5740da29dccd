"""The MIME message the SMTP provider sends, parsed back the way a mail client would."""

import email
import uuid
from datetime import UTC, datetime
from email import policy

from pulse.channels.email import build_message
from pulse.delivery.providers import Claim
from pulse.vocabulary import Channel, Priority


def _parsed(content: dict[str, str]) -> tuple[uuid.UUID, email.message.EmailMessage]:
    notification_id = uuid.uuid4()
    claim = Claim(
        notification_id=notification_id,
        tenant_id=uuid.uuid4(),
        channel=Channel.EMAIL,
        priority=Priority.NORMAL,
        recipient="zoë@example.com",
        content=content,
        attempt_number=1,
        attempts_left=3,
        created_at=datetime.now(UTC),
    )
    raw = build_message(claim, sender="Pulse Café <no-reply@pulse.localhost>", message_id_domain="mail.test")
    parsed = email.message_from_bytes(raw.as_bytes(), policy=policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return notification_id, parsed


def test_text_and_html_become_multipart_alternative_with_a_stable_message_id() -> None:
    notification_id, message = _parsed(
        {"subject": "Grüße ✓", "body": "Héllo\nline 2", "html": "<p>Héllo</p>"}
    )

    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "Grüße ✓"
    assert message["From"] == "Pulse Café <no-reply@pulse.localhost>"
    assert message["Message-ID"] == f"<{notification_id}@mail.test>"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and text.get_content() == "Héllo\nline 2"
    assert html is not None and html.get_content() == "<p>Héllo</p>"


def test_a_text_only_email_is_a_single_text_part() -> None:
    _, message = _parsed({"subject": "Plain", "body": "Just text"})

    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Just text"
