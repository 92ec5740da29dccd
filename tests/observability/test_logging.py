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


def test_urls_are_logged_as_scheme_and_host_only(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test")
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with httpx.Client(transport=transport) as client:
        client.post(SECRET_URL, content=b"{}")  # httpx logs every request at INFO
    logging.getLogger("pulse.channels.webhook").info("accepted by %s", SECRET_URL)
    # A Slack-style webhook: the path is the token.
    logging.getLogger("pulse.channels.webhook").info(
        "accepted by %s", "https://hooks.example.com/T0/B0/s3cr3t"
    )
    logging.getLogger("pulse.channels.webhook").info("accepted by %s", "https://hooks.example.com/")

    messages = [str(event["message"]) for event in _events(capsys)]

    assert messages == [
        'HTTP Request: POST https://hooks.example.com/[redacted] "HTTP/1.1 204 No Content"',
        "accepted by https://hooks.example.com/[redacted]",
        "accepted by https://hooks.example.com/[redacted]",
        "accepted by https://hooks.example.com",
    ]


def test_broker_and_database_urls_lose_their_password(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test")
    log = logging.getLogger("pulse.test")
    log.info(
        "connecting to %s and %s", "amqp://pulse:hunter2@mq:5672/pulse", "postgresql+psycopg://p:hunter2@db/x"
    )
    [event] = _events(capsys)
    assert (
        event["message"] == "connecting to amqp://mq:5672/[redacted] and postgresql+psycopg://db/[redacted]"
    )


def test_other_arguments_are_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test")
    logging.getLogger("pulse.test").info("%s of %d to %s", "3", 4, "localhost:8025/webhooks")
    [event] = _events(capsys)
    assert event["message"] == "3 of 4 to localhost:8025/webhooks"


def test_a_malformed_url_is_redacted_without_breaking_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test")
    logging.getLogger("pulse.test").warning("calling %s", "https://user:pw@host:port/x?k=v")
    [event] = _events(capsys)
    assert event["message"] == "calling https://host/[redacted]"
