"""The webhook provider against the sandbox's webhook receiver (in-process): signing, ids, outcomes."""

import ipaddress
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from devtools.stack import free_port
from pulse.channels.ssrf import IPAddress
from pulse.channels.webhook import SecretCache, WebhookProvider
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, TransientProviderError
from pulse.settings import WebhookSettings
from pulse.vocabulary import Channel, Priority
from pulse.webhooks.secrets import new_secret
from services.sandbox.faults import Fault, FaultInjector
from services.sandbox.store import MessageStore

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


def _provider(allowlist: str = "127.0.0.1", **kwargs: object) -> WebhookProvider:
    settings = WebhookSettings(allowlist=allowlist, connect_timeout_seconds=2, read_timeout_seconds=2)
    return WebhookProvider(settings, lambda tenant_id: SECRET, **kwargs)  # type: ignore[arg-type]


def _claim(url: str, notification_id: uuid.UUID | None = None) -> Claim:
    return Claim(
        notification_id=notification_id or uuid.uuid4(),
        tenant_id=TENANT,
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
        WebhookProvider(settings, lambda tenant_id: SECRET).send(_claim(f"{url}/webhooks/slow"))
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


def test_secrets_are_cached_briefly() -> None:
    loads: list[uuid.UUID] = []

    def load(tenant_id: uuid.UUID) -> str:
        loads.append(tenant_id)
        return SECRET

    cached = SecretCache(load, ttl_seconds=60)
    assert cached(TENANT) == cached(TENANT) == SECRET
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
