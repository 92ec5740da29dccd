"""The sandbox started in-process on free ports, driven with smtplib and its HTTP API."""

import dataclasses
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import httpx
import pytest
import uvicorn

from pulse.channels.email import SmtpProvider
from pulse.errors import ProviderThrottled
from pulse.settings import SmtpSettings
from services.sandbox.app import create_app
from services.sandbox.faults import FaultInjector
from services.sandbox.smtp import create_smtp_controller
from services.sandbox.store import MessageStore, new_message
from tests.delivery.test_circuit import CLAIM

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 10
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sandbox:
    smtp_port: int
    http: httpx.Client

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP(HOST, self.smtp_port, timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def is_healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def running_sandbox() -> Iterator[Sandbox]:
    store, faults = MessageStore(max_messages=10_000), FaultInjector()
    smtp_port, http_port = free_port(), free_port()
    controller = create_smtp_controller(store, faults, HOST, smtp_port)
    server = uvicorn.Server(
        uvicorn.Config(create_app(store, faults), host=HOST, port=http_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    controller.start()
    try:
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "sandbox HTTP server did not start"
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://{HOST}:{http_port}", timeout=10) as http:
            yield Sandbox(smtp_port, http)
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
        controller.stop()


@pytest.fixture
def sandbox(running_sandbox: Sandbox) -> Sandbox:
    running_sandbox.http.delete("/api/messages").raise_for_status()
    running_sandbox.http.delete("/api/faults").raise_for_status()
    return running_sandbox


def make_mail(
    subject: str, text: str, html: str | None = None, to: str = "someone@example.com"
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Pulse <noreply@pulse.test>"
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = make_msgid(domain="pulse.test")
    mail.set_content(text)
    if html is not None:
        mail.add_alternative(html, subtype="html")
    return mail


def messages(sandbox: Sandbox, **params: str | int) -> dict:
    response = sandbox.http.get("/api/messages", params=params)
    response.raise_for_status()
    return response.json()


def test_a_mail_sent_again_with_the_same_message_id_is_kept_once_and_counted_as_a_repeat(
    sandbox: Sandbox,
) -> None:
    mail = make_mail("Receipt", "Order 1001", to="ada@example.com")
    other = make_mail("Receipt", "Order 1001", to="ada@example.com")  # same content, new Message-ID
    with sandbox.smtp() as smtp:
        for sent in (mail, mail, mail, other):
            smtp.send_message(sent)

    listing = messages(sandbox)
    assert listing["total"] == 2
    by_message_id = {item["headers"]["Message-ID"]: item for item in listing["items"]}
    assert by_message_id[mail["Message-ID"]]["repeats"] == 2
    assert by_message_id[other["Message-ID"]]["repeats"] == 0
    assert sandbox.http.get("/api/stats").json()["repeats"] == 2


def test_multipart_mail_is_stored_once_per_recipient(sandbox: Sandbox) -> None:
    recipients = ["alice@example.com", "bob@example.com"]
    mail = make_mail(
        "Your code ✓", "Code: 123456 — merci", "<p>Code: <b>123456</b></p>", to=", ".join(recipients)
    )
    with sandbox.smtp() as smtp:
        smtp.send_message(mail)

    listing = messages(sandbox)
    assert listing["total"] == 2
    assert sorted(item["recipient"] for item in listing["items"]) == recipients
    for item in listing["items"]:
        assert item["channel"] == "email"
        assert item["provider"] == "smtp"
        assert item["subject"] == "Your code ✓"
        assert item["body"].strip() == "Code: 123456 — merci"
        assert item["html"].strip() == "<p>Code: <b>123456</b></p>"
        assert item["headers"]["Message-ID"] == mail["Message-ID"]
        assert item["headers"]["From"] == "Pulse <noreply@pulse.test>"
        assert uuid.UUID(item["id"])
        assert datetime.fromisoformat(item["received_at"]).tzinfo == UTC
        assert sandbox.http.get(f"/api/messages/{item['id']}").json() == item
    assert listing["items"][0]["id"] != listing["items"][1]["id"]


def test_plain_mail_has_no_html(sandbox: Sandbox) -> None:
    with sandbox.smtp() as smtp:
        smtp.send_message(make_mail("Plain", "just text"))

    [item] = messages(sandbox)["items"]
    assert item["body"].strip() == "just text"
    assert item["html"] is None


def test_one_connection_carries_many_mails_and_filters_apply(sandbox: Sandbox) -> None:
    with sandbox.smtp() as smtp:
        for i in range(30):
            to = "alice@example.com" if i % 3 == 0 else "bob@example.com"
            subject = "Invoice ready" if i == 29 else f"Update {i}"
            smtp.send_message(make_mail(subject, f"body {i}", to=to))
        smtp.send_message(make_mail("Hello", "Your INVOICE is attached", to="carol@example.com"))

    everything = messages(sandbox, limit=5)
    assert everything["total"] == 31
    assert [item["subject"] for item in everything["items"][:2]] == ["Hello", "Invoice ready"]  # newest first
    assert len(everything["items"]) == 5

    alice = messages(sandbox, recipient="alice@example.com", limit=10_000)
    assert alice["total"] == 10
    assert {item["recipient"] for item in alice["items"]} == {"alice@example.com"}

    invoice = messages(sandbox, q="invoice")  # case-insensitive, over subject and body
    assert [item["recipient"] for item in invoice["items"]] == ["carol@example.com", "bob@example.com"]
    assert messages(sandbox, q="invoice", recipient="bob@example.com")["total"] == 1
    assert messages(sandbox, channel="sms")["total"] == 0

    count = sandbox.http.get(
        "/api/messages/count", params={"channel": "email", "recipient": "bob@example.com"}
    )
    assert count.json() == {"count": 20}
    assert sandbox.http.get("/api/stats").json() == {"total": 31, "by_channel": {"email": 31}, "repeats": 0}


def test_delete_clears_messages(sandbox: Sandbox) -> None:
    with sandbox.smtp() as smtp:
        smtp.send_message(make_mail("One", "1"))
        smtp.send_message(make_mail("Two", "2"))

    assert sandbox.http.delete("/api/messages").json() == {"deleted": 2}
    assert messages(sandbox) == {"items": [], "total": 0}
    assert sandbox.http.get("/api/messages/count").json() == {"count": 0}


def test_unknown_message_is_404(sandbox: Sandbox) -> None:
    assert sandbox.http.get(f"/api/messages/{uuid.uuid4()}").status_code == 404


def test_a_429_fault_makes_the_relay_say_slow_down_which_the_smtp_provider_reads_as_throttling(
    sandbox: Sandbox,
) -> None:
    sandbox.http.post(
        "/api/faults", json={"endpoint": "smtp", "status": 429, "fail_next": 1}
    ).raise_for_status()
    provider = SmtpProvider(SmtpSettings(host=HOST, port=sandbox.smtp_port))
    claim = dataclasses.replace(CLAIM, content={"subject": "Slow", "body": "down"})

    with pytest.raises(ProviderThrottled, match=r"SMTP 421 4\.7\.0 .*rate limit exceeded"):
        provider.send(claim)
    provider.send(claim)  # The next one goes through (a new connection: 421 closes it).
    provider.close()

    assert [item["subject"] for item in messages(sandbox)["items"]] == ["Slow"]


def test_fail_next_rejects_once_with_transient_code_then_accepts(sandbox: Sandbox) -> None:
    fault = {"endpoint": "smtp", "status": 451, "fail_next": 1}
    sandbox.http.post("/api/faults", json=fault).raise_for_status()

    with sandbox.smtp() as smtp:
        with pytest.raises(smtplib.SMTPDataError) as rejected:
            smtp.send_message(make_mail("First", "rejected"))
        assert rejected.value.smtp_code == 451
        assert b"sandbox: injected failure" in rejected.value.smtp_error
        smtp.send_message(make_mail("Second", "accepted"))  # same connection, after smtplib's RSET

    assert [item["subject"] for item in messages(sandbox)["items"]] == ["Second"]
    [active] = sandbox.http.get("/api/faults").json()["items"]
    assert active["fail_next"] == 0


def test_rate_one_fault_rejects_permanently_until_cleared(sandbox: Sandbox) -> None:
    sandbox.http.post("/api/faults", json={"endpoint": "smtp", "status": 550, "rate": 1.0}).raise_for_status()

    with sandbox.smtp() as smtp:
        for _ in range(3):
            with pytest.raises(smtplib.SMTPDataError) as rejected:
                smtp.send_message(make_mail("Rejected", "never stored"))
            assert rejected.value.smtp_code == 550
        assert messages(sandbox)["total"] == 0

        assert sandbox.http.delete("/api/faults").json() == {"deleted": 1}
        smtp.send_message(make_mail("Accepted", "stored"))
    assert messages(sandbox)["total"] == 1


def test_latency_delays_the_data_answer(sandbox: Sandbox) -> None:
    sandbox.http.post("/api/faults", json={"endpoint": "smtp", "latency_ms": 300}).raise_for_status()

    with sandbox.smtp() as smtp:
        started = time.monotonic()
        smtp.send_message(make_mail("Slow", "but delivered"))
        assert time.monotonic() - started >= 0.3
    assert messages(sandbox)["total"] == 1


def test_fault_for_another_endpoint_leaves_smtp_alone(sandbox: Sandbox) -> None:
    sandbox.http.post(
        "/api/faults", json={"endpoint": "twilio", "status": 503, "rate": 1.0}
    ).raise_for_status()

    with sandbox.smtp() as smtp:
        smtp.send_message(make_mail("Unaffected", "delivered"))
    assert messages(sandbox)["total"] == 1


def test_posting_a_fault_replaces_the_previous_one(sandbox: Sandbox) -> None:
    sandbox.http.post("/api/faults", json={"endpoint": "smtp", "status": 550, "rate": 1.0}).raise_for_status()
    sandbox.http.post("/api/faults", json={"endpoint": "smtp", "latency_ms": 5}).raise_for_status()

    assert sandbox.http.get("/api/faults").json() == {
        "items": [{"endpoint": "smtp", "status": 503, "rate": 0.0, "latency_ms": 5, "fail_next": 0}]
    }


@pytest.mark.parametrize(
    "fault",
    [
        {"endpoint": "pigeon", "status": 503},
        {"endpoint": "smtp", "rate": 1.5},
        {"endpoint": "smtp", "status": 200},
        {"endpoint": "smtp", "fail_next": -1},
    ],
)
def test_invalid_fault_is_422(sandbox: Sandbox, fault: dict) -> None:
    assert sandbox.http.post("/api/faults", json=fault).status_code == 422
    assert sandbox.http.get("/api/faults").json() == {"items": []}


def test_inbox_page_and_health(sandbox: Sandbox) -> None:
    page = sandbox.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Pulse sandbox" in page.text
    assert "api/messages" in page.text
    assert sandbox.http.get("/healthz").json() == {"status": "ok"}


def test_store_drops_oldest_beyond_capacity_and_keeps_counts_exact() -> None:
    store = MessageStore(max_messages=3)
    for i in range(5):
        store.add(
            new_message(channel="email", provider="smtp", recipient=f"r{i % 2}", subject=str(i), body="")
        )

    items, total = store.search(limit=10)
    assert [item["subject"] for item in items] == ["4", "3", "2"]
    assert total == store.count() == 3
    assert store.count(recipient="r0") == 2
    assert store.count(channel="email", recipient="r1") == 1
    assert store.by_channel() == {"email": 3}


def test_module_entry_point_serves_both_and_stops_on_sigterm() -> None:
    smtp_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "PULSE_SANDBOX_HOST": HOST,
        "PULSE_SANDBOX_SMTP_PORT": str(smtp_port),
        "PULSE_SANDBOX_HTTP_PORT": str(http_port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.sandbox"], cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        base_url = f"http://{HOST}:{http_port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not is_healthy(base_url):
            assert process.poll() is None, "sandbox exited during startup"
            assert time.monotonic() < deadline, "sandbox did not become healthy"
            time.sleep(0.05)
        with smtplib.SMTP(HOST, smtp_port, timeout=10) as smtp:
            smtp.send_message(make_mail("Via main", "hello"))
        assert httpx.get(f"{base_url}/api/messages/count").json() == {"count": 1}

        process.send_signal(signal.SIGTERM)
        _, logs = process.communicate(timeout=STARTUP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert f"SMTP smtp://{HOST}:{smtp_port}, inbox http://{HOST}:{http_port}/" in logs
    assert "sandbox stopped" in logs
