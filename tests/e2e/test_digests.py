"""End to end: three digested sends → one email, sent by the scheduler when the window closes."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status, wait_until

WINDOW_SECONDS = 10  # The shortest window there is.
TEMPLATE = {
    "name": "comments",
    "channel": "email",
    "subject": "{{ count }} new comments on your post",
    "body": "{% for e in events %}{{ e.author }}: {{ e.text }}\n{% endfor %}",
    "html": "<ul>{% for e in events %}<li>{{ e.author }}: {{ e.text }}</li>{% endfor %}</ul>",
    "variables": ["events", "count"],
}
COMMENTS = [("Bob", "Great post"), ("Eve", "I disagree"), ("Bob", "Fair point")]


@pytest.fixture
def client(stack: Stack, tenant: Tenant) -> Iterator[httpx.Client]:
    with stack.client(tenant.api_key) as client:
        assert client.post("/v1/templates", json=TEMPLATE).status_code == 201
        yield client


def _comment(
    recipient: str, author: str, text: str, *, window_seconds: int = WINDOW_SECONDS
) -> dict[str, Any]:
    return {
        "channel": "email",
        "recipient": recipient,
        "user_id": "ada",
        "template": "comments",
        "variables": {"author": author, "text": text},
        "digest": {"key": "post-42", "window_seconds": window_seconds},
    }


def _one_email_to(stack: Stack, recipient: str) -> dict[str, Any]:
    with stack.sandbox() as sandbox:
        emails: list[dict[str, Any]] = wait_until(
            lambda: sandbox.get("/api/messages", params={"recipient": recipient}).json()["items"],
            what="the digest in the sandbox",
        )
    [email] = emails
    return email


def test_three_digested_sends_arrive_as_one_email_with_the_three_events(
    stack: Stack, client: httpx.Client
) -> None:
    recipient = f"digest-{uuid.uuid4().hex[:8]}@example.com"

    answers = [client.post("/v1/notifications", json=_comment(recipient, *comment)) for comment in COMMENTS]

    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert {answer.json()["status"] for answer in answers} == {"digested"}
    [digest_id] = {answer.json()["digest_id"] for answer in answers}
    delivered = wait_for_status(client, digest_id, "delivered", timeout=WINDOW_SECONDS + 30)
    assert delivered["content"]["subject"] == "3 new comments on your post"
    email = _one_email_to(stack, recipient)
    assert email["subject"] == "3 new comments on your post"
    # Mail lines end in CRLF.
    assert email["body"].splitlines() == ["Bob: Great post", "Eve: I disagree", "Bob: Fair point"]
    assert email["html"] == (
        "<ul><li>Bob: Great post</li><li>Eve: I disagree</li><li>Bob: Fair point</li></ul>"
    )


def test_an_open_digest_survives_a_restart_of_the_gateway_and_the_scheduler(
    stack: Stack, client: httpx.Client
) -> None:
    recipient = f"digest-{uuid.uuid4().hex[:8]}@example.com"
    # Long enough for both restarts on a busy machine, so that the last send still joins the window.
    window = 90
    before = [
        client.post("/v1/notifications", json=_comment(recipient, *comment, window_seconds=window))
        for comment in COMMENTS[:2]
    ]

    for service in ("api", "scheduler"):
        stack.kill(service)
    stack.start("api", "scheduler")
    after = client.post("/v1/notifications", json=_comment(recipient, *COMMENTS[2], window_seconds=window))

    assert [answer.status_code for answer in [*before, after]] == [202, 202, 202]
    [digest_id] = {answer.json()["digest_id"] for answer in [*before, after]}
    assert after.json()["event_count"] == 3
    wait_for_status(client, digest_id, "delivered", timeout=window + 30)
    assert _one_email_to(stack, recipient)["subject"] == "3 new comments on your post"
