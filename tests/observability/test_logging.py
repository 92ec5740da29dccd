"""The services' JSON log lines (pulse.observability.logging)."""

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from pulse.observability.logging import configure_logging

SECRET_URL = "https://pulse:hunter2@hooks.example.com/orders/42?token=s3cr3t&sig=abc#frag"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests call configure_logging (in the test itself: capsys swaps stderr between phases); the
    root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_urls_are_logged_without_credentials_or_query(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test")
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with httpx.Client(transport=transport) as client:
        client.post(SECRET_URL, content=b"{}")  # httpx logs every request at INFO
    logging.getLogger("pulse.channels.webhook").info("accepted by %s", SECRET_URL)

    messages = [str(event["message"]) for event in _events(capsys)]

    assert messages == [
        'HTTP Request: POST https://hooks.example.com/orders/42?[redacted] "HTTP/1.1 204 No Content"',
        "accepted by https://hooks.example.com/orders/42?[redacted]",
    ]


def test_other_arguments_are_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test")
    logging.getLogger("pulse.test").info("%s of %d to %s", "3", 4, "http://localhost:8025/webhooks")
    [event] = _events(capsys)
    assert event["message"] == "3 of 4 to http://localhost:8025/webhooks"


def test_a_malformed_url_is_redacted_without_breaking_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test")
    logging.getLogger("pulse.test").warning("calling %s", "https://user:pw@host:port/x?k=v")
    [event] = _events(capsys)
    assert event["message"] == "calling https://host/x?[redacted]"
