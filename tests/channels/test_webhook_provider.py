"""The webhook provider against the sandbox's webhook receiver (in-process): signing, ids, outcomes."""

import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from sqlalchemy import create_engine
from standardwebhooks import Webhook, WebhookVerificationError

from devtools.stack import free_port
from pulse.channels.webhook import SecretCache, WebhookProvider
from pulse.db import make_session_factory, transaction
from pulse.delivery.circuit import BreakerSettings, DestinationProvider, ProviderChain
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, TransientProviderError
from pulse.settings import WebhookSettings
from pulse.vocabulary import Channel, Priority
from pulse.webhooks.secrets import SigningSecrets, new_secret, signing_secrets
from pulse.webhooks.ssrf import IPAddress
from services.sandbox.faults import Fault, FaultInjector
from services.sandbox.store import MessageStore
from tests.channels.conftest import (
    SLOW_HEAD,
    RawServer,
    assert_cut_at_half_a_second,
    assert_read_in_little_memory,
)

HOST = "127.0.0.1"
SECRET = new_secret()
TENANT = uuid.uuid4()


@pytest.fixture
def receiver(sandbox_url: tuple[str, MessageStore, FaultInjector]) -> Iterator[tuple[str, MessageStore]]:
    url, store, faults = sandbox_url
    store.clear()
    faults.clear()
    yield url, store
    faults.clear()


def _provider(
    allowlist: str = "127.0.0.1", deadline_seconds: float = 10, **kwargs: object
) -> WebhookProvider:
    settings = WebhookSettings(
        allowlist=allowlist,
        connect_timeout_seconds=2,
        read_timeout_seconds=2,
        deadline_seconds=deadline_seconds,
    )
    return WebhookProvider(settings, lambda tenant_id: SigningSecrets(SECRET), **kwargs)  # type: ignore[arg-type]


def _claim(url: str, notification_id: uuid.UUID | None = None, tenant_id: uuid.UUID = TENANT) -> Claim:
    return Claim(
        notification_id=notification_id or uuid.uuid4(),
        tenant_id=tenant_id,
        channel=Channel.WEBHOOK,
        priority=Priority.NORMAL,
        recipient=url,
        content={"subject": "Order shipped", "body": "A-1001 is on its way", "data": {"order": "A-1001"}},
        attempt_number=1,
        attempts_left=3,
        created_at=datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
    )


def test_a_delivery_is_signed_per_standard_webhooks(receiver: tuple[str, MessageStore]) -> None:
    url, store = receiver
    claim = _claim(f"{url}/webhooks/orders")
    assert _provider().send(claim) == {"status": 200}
    [message] = store.search(channel="webhook", limit=10)[0]
    assert message["recipient"] == "/webhooks/orders"
    headers = message["headers"]
    assert headers["webhook-id"] == str(claim.notification_id)
    assert headers["content-type"] == "application/json"
    payload = Webhook(SECRET).verify(message["body"], headers)
    assert payload == {
        "type": "notification",
        "id": str(claim.notification_id),
        "timestamp": "2026-11-21T10:00:00+00:00",
        "data": {"subject": "Order shipped", "body": "A-1001 is on its way", "data": {"order": "A-1001"}},
    }
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(message["body"], headers)


@pytest.mark.parametrize(("rotated_hours_ago", "verifies_with_old"), [(1, True), (25, False)])
def test_after_a_rotation_the_old_secret_verifies_only_during_the_grace_period(
    receiver: tuple[str, MessageStore], rotated_hours_ago: float, verifies_with_old: bool
) -> None:
    url, store = receiver
    old, new = new_secret(), new_secret()
    rotated = SigningSecrets(
        new, previous=old, rotated_at=datetime.now(UTC) - timedelta(hours=rotated_hours_ago)
    )
    provider = WebhookProvider(
        WebhookSettings(allowlist=HOST, secret_grace_hours=24), lambda tenant_id: rotated
    )
    provider.send(_claim(f"{url}/webhooks/rotated"))
    [message] = store.search(channel="webhook", limit=10)[0]
    headers = message["headers"]

    Webhook(new).verify(message["body"], headers)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == (2 if verifies_with_old else 1)
    assert signatures[0] == Webhook(new).sign(headers["webhook-id"], _sent_at(headers), message["body"])
    if verifies_with_old:
        Webhook(old).verify(message["body"], headers)
    else:
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(message["body"], headers)


def _sent_at(headers: dict[str, str]) -> datetime:
    return datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)


def test_the_webhook_id_is_the_same_on_every_send_of_a_notification(
    receiver: tuple[str, MessageStore],
) -> None:
    url, store = receiver
    claim = _claim(f"{url}/webhooks/twice")
    provider = _provider()
    provider.send(claim)
    provider.send(claim)
    # The receiver collapses repeats by webhook-id, like a real consumer: one message, one repeat.
    [message] = store.search(recipient="/webhooks/twice", limit=10)[0]
    assert message["headers"]["webhook-id"] == str(claim.notification_id)
    assert message["repeats"] == 1


def test_410_gone_is_permanent(
    sandbox: tuple[str, MessageStore, FaultInjector], receiver: tuple[str, MessageStore]
) -> None:
    url, _store = receiver
    sandbox[2].set_fault(Fault(endpoint="webhook", status=410, fail_next=1))
    with pytest.raises(PermanentProviderError, match="410"):
        _provider().send(_claim(f"{url}/webhooks/gone"))


def test_404_is_permanent_and_503_transient_with_retry_after(
    sandbox: tuple[str, MessageStore, FaultInjector], receiver: tuple[str, MessageStore]
) -> None:
    url, store = receiver
    faults = sandbox[2]
    faults.set_fault(Fault(endpoint="webhook", status=404, fail_next=1))
    with pytest.raises(PermanentProviderError, match="404"):
        _provider().send(_claim(f"{url}/webhooks/x"))
    faults.set_fault(Fault(endpoint="webhook", status=503, fail_next=1))
    with pytest.raises(TransientProviderError, match="503"):
        _provider().send(_claim(f"{url}/webhooks/x"))
    faults.set_fault(Fault(endpoint="webhook", status=429, fail_next=1))
    with pytest.raises(TransientProviderError) as error:
        _provider().send(_claim(f"{url}/webhooks/x"))
    assert error.value.retry_after == 1.0
    assert store.count(channel="webhook") == 0


def test_timeouts_and_refused_connections_are_transient(
    sandbox: tuple[str, MessageStore, FaultInjector], receiver: tuple[str, MessageStore]
) -> None:
    url, _store = receiver
    sandbox[2].set_fault(Fault(endpoint="webhook", latency_ms=1500))
    settings = WebhookSettings(allowlist="127.0.0.1", read_timeout_seconds=0.2)
    with pytest.raises(TransientProviderError, match="Timeout"):
        WebhookProvider(settings, lambda tenant_id: SigningSecrets(SECRET)).send(
            _claim(f"{url}/webhooks/slow")
        )
    with pytest.raises(TransientProviderError):
        _provider().send(_claim(f"http://{HOST}:{free_port()}/webhooks/closed"))


def test_refused_addresses_fail_permanently_without_a_request(receiver: tuple[str, MessageStore]) -> None:
    url, store = receiver
    with pytest.raises(PermanentProviderError, match="refused by the SSRF guard"):
        _provider(allowlist="").send(_claim(f"{url}/webhooks/private"))
    with pytest.raises(PermanentProviderError, match="refused by the SSRF guard"):
        _provider().send(_claim("http://169.254.169.254/latest/meta-data/"))
    assert store.count(channel="webhook") == 0


def test_the_request_goes_to_the_checked_address_with_the_original_host(
    receiver: tuple[str, MessageStore],
) -> None:
    url, store = receiver
    port = url.rsplit(":", 1)[1]
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        return [ipaddress.ip_address(HOST)]

    # hooks.invalid resolves nowhere for real: only the pinned address can have reached the sandbox.
    _provider(allowlist="127.0.0.0/8", resolver=resolver).send(
        _claim(f"http://hooks.invalid:{port}/webhooks/pin")
    )
    [message] = store.search(recipient="/webhooks/pin", limit=10)[0]
    assert calls == ["hooks.invalid"]
    assert message["headers"]["host"] == f"hooks.invalid:{port}"
    assert (
        Webhook(SECRET).verify(message["body"], message["headers"])["data"]["body"] == "A-1001 is on its way"
    )


def test_redirects_are_not_followed(receiver: tuple[str, MessageStore]) -> None:
    url, store = receiver
    # The sandbox redirects POST /api/faults/ to /api/faults (307): following it would set a fault.
    with pytest.raises(PermanentProviderError, match=r"307.*redirects are not followed"):
        _provider().send(_claim(f"{url}/api/faults/"))
    assert store.count(channel="webhook") == 0


@pytest.mark.parametrize("status", [200, 503])
def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_deadline(
    sandbox: tuple[str, MessageStore, FaultInjector], status: int
) -> None:
    url, _store, faults = sandbox
    # Each byte comes well within the read timeout (2 s): only a deadline on the whole request ends it.
    failing = {"status": status, "rate": 1.0} if status >= 400 else {}
    faults.set_fault(Fault(endpoint="webhook", answer="drip", **failing))
    started = time.monotonic()
    if status == 200:
        assert _provider(deadline_seconds=0.5).send(_claim(f"{url}/webhooks/drip")) == {"status": 200}
    else:
        with pytest.raises(TransientProviderError, match=r"webhook answered 503: [.]+$"):
            _provider(deadline_seconds=0.5).send(_claim(f"{url}/webhooks/drip"))
    assert time.monotonic() - started < 1.5


def test_a_status_line_dripped_a_byte_at_a_time_ends_at_the_deadline(raw_server: RawServer) -> None:
    url = raw_server(SLOW_HEAD, 1, 0.1)
    assert_cut_at_half_a_second(lambda: _provider(deadline_seconds=0.5).send(_claim(f"{url}/hook")))


def test_an_answer_falsely_labelled_gzip_is_classified_by_its_status(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, _store, faults = sandbox
    faults.set_fault(Fault(endpoint="webhook", answer="bad-gzip"))
    assert _provider().send(_claim(f"{url}/webhooks/gzip")) == {"status": 200}
    faults.set_fault(Fault(endpoint="webhook", status=503, rate=1.0, answer="bad-gzip"))
    with pytest.raises(
        TransientProviderError, match=r"webhook answered 503: \(gzip-encoded body not shown\)"
    ):
        _provider().send(_claim(f"{url}/webhooks/gzip"))


@pytest.mark.parametrize("answer", ["gzip-bomb", "huge"])
def test_a_huge_answer_is_not_read_into_memory(
    sandbox: tuple[str, MessageStore, FaultInjector], answer: Literal["gzip-bomb", "huge"]
) -> None:
    url, _store, faults = sandbox
    faults.set_fault(Fault(endpoint="webhook", status=503, rate=1.0, answer=answer))
    provider = _provider()
    # 32 MiB once inflated (the bomb), 16 MiB as sent (huge).
    assert_read_in_little_memory(lambda: provider.send(_claim(f"{url}/webhooks/huge")), "503")


def test_each_tenant_has_a_circuit_per_receiver_host() -> None:
    provider, other_tenant = _provider(), uuid.uuid4()
    key = provider.circuit_key(_claim("https://hooks.example.com/orders"))
    assert provider.circuit_key(_claim("https://HOOKS.example.com:443/invoices?x=1")) == key
    assert provider.circuit_key(_claim("https://hooks.example.com/orders", tenant_id=other_tenant)) != key
    assert provider.circuit_key(_claim("https://hooks.example.com:8443/orders")) != key
    assert provider.circuit_key(_claim("https://other.example.com/orders")) != key


def test_the_secret_is_read_and_the_url_checked_before_the_request(
    receiver: tuple[str, MessageStore],
) -> None:
    url, store = receiver
    loads: list[uuid.UUID] = []

    def load(tenant_id: uuid.UUID) -> SigningSecrets:
        loads.append(tenant_id)
        return SigningSecrets(SECRET)

    provider = WebhookProvider(WebhookSettings(allowlist="127.0.0.1"), load)
    assert isinstance(provider, DestinationProvider)
    request = provider.prepare(_claim(f"{url}/webhooks/prepared"))
    assert (loads, store.count(channel="webhook")) == ([TENANT], 0)
    assert request() == {"status": 200}
    assert store.count(channel="webhook") == 1
    with pytest.raises(PermanentProviderError, match="SSRF guard"):
        provider.prepare(_claim("http://10.0.0.1/hook"))


def test_a_database_error_reading_the_secret_during_a_probe_leaves_the_probe_to_come(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, store, faults = sandbox
    database = make_session_factory(create_engine("postgresql+psycopg://postgres@127.0.0.1:1/pulse"))
    database_down = False

    def load(tenant_id: uuid.UUID) -> SigningSecrets:
        if not database_down:
            return SigningSecrets(SECRET)
        with transaction(database) as session:  # nothing listens there: a real DBAPIError
            return signing_secrets(session, tenant_id)

    now = [0.0]
    chain = ProviderChain(
        [WebhookProvider(WebhookSettings(allowlist="127.0.0.1"), load)],
        BreakerSettings(failure_threshold=1, cooldown_seconds=30),
        clock=lambda: now[0],
    )
    claim = _claim(f"{url}/webhooks/probe")
    faults.set_fault(Fault(endpoint="webhook", status=503, fail_next=1))
    with pytest.raises(TransientProviderError, match="503"):
        chain.send(claim)
    now[0] += 30
    database_down = True

    with pytest.raises(TransientProviderError, match="failed unexpectedly: OperationalError"):
        chain.send(claim)

    assert chain.wait_seconds(claim) == 0
    database_down = False
    chain.send(claim)
    assert store.count(recipient="/webhooks/probe") == 1


def test_secrets_are_cached_briefly() -> None:
    loads: list[uuid.UUID] = []

    def load(tenant_id: uuid.UUID) -> SigningSecrets:
        loads.append(tenant_id)
        return SigningSecrets(SECRET)

    cached = SecretCache(load, ttl_seconds=60)
    assert cached(TENANT) == cached(TENANT) == SigningSecrets(SECRET)
    assert loads == [TENANT]
    uncached = SecretCache(load, ttl_seconds=0)
    uncached(TENANT)
    uncached(TENANT)
    assert len(loads) == 3


def test_the_payload_is_compact_json() -> None:
    claim = _claim("https://example.com/hook")
    from pulse.channels.webhook import webhook_payload

    body = webhook_payload(claim)
    assert json.loads(body)["id"] == str(claim.notification_id)
    assert ", " not in body
