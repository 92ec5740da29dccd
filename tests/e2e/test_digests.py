"""End to end: three digested sends → one email, sent by the scheduler when the window closes."""

import uuid
from collections.abc import Iterator

import httpx
import pytest

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status, wait_until

WINDOW_SECONDS = 10  # The shortest window there is.


@pytest.fixture
def client(stack: Stack, tenant: Tenant) -> Iterator[httpx.Client]:
    with stack.client(tenant.api_key) as client:
        yield client


def test_three_digested_sends_arrive_as_one_email_with_the_three_events(
    stack: Stack, client: httpx.Client
) -> None:
    template = {
        "name": "comments",
        "channel": "email",
        "subject": "{{ count }} new comments on your post",
        "body": "{% for e in events %}{{ e.author }}: {{ e.text }}\n{% endfor %}",
        "html": "<ul>{% for e in events %}<li>{{ e.author }}: {{ e.text }}</li>{% endfor %}</ul>",
        "variables": ["events", "count"],
    }
    assert client.post("/v1/templates", json=template).status_code == 201
    recipient = f"digest-{uuid.uuid4().hex[:8]}@example.com"
    comments = [("Bob", "Great post"), ("Eve", "I disagree"), ("Bob", "Fair point")]

    answers = [
        client.post(
            "/v1/notifications",
            json={
                "channel": "email",
                "recipient": recipient,
                "user_id": "ada",
                "template": "comments",
                "variables": {"author": author, "text": text},
                "digest": {"key": "post-42", "window_seconds": WINDOW_SECONDS},
            },
        )
        for author, text in comments
    ]

    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert {answer.json()["status"] for answer in answers} == {"digested"}
    [digest_id] = {answer.json()["digest_id"] for answer in answers}
    delivered = wait_for_status(client, digest_id, "delivered", timeout=WINDOW_SECONDS + 30)
    assert delivered["content"]["subject"] == "3 new comments on your post"
    with stack.sandbox() as sandbox:
        [email] = wait_until(
            lambda: sandbox.get("/api/messages", params={"recipient": recipient}).json()["items"],
            what="the digest in the sandbox",
        )
    assert email["subject"] == "3 new comments on your post"
    # Mail lines end in CRLF.
    assert email["body"].splitlines() == ["Bob: Great post", "Eve: I disagree", "Bob: Fair point"]
    assert email["html"] == (
        "<ul><li>Bob: Great post</li><li>Eve: I disagree</li><li>Bob: Fair point</li></ul>"
    )
