"""Pulse scales out: two gateways and three email workers (processes, as replicas would run) against one
database and vhost deliver every notification exactly once, and every worker takes a share."""

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.stack import Infrastructure, Stack, metric_value, running_stack, wait_until
from pulse.tenants.service import Scope

GATEWAYS = ["api", "api_2"]
WORKERS = ["email_worker", "email_worker_2", "email_worker_3"]
BATCHES, BATCH_SIZE, SINGLE_SENDS = 14, 100, 200  # 1600 emails
DELIVERED = 'pulse_notifications_delivered_total{channel="email",provider="smtp"}'
ACCEPTED = 'pulse_notifications_accepted_total{channel="email",priority="normal"}'


@pytest.fixture(scope="module")
def replicated(private: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("scale-out")
    with running_stack(private, log_dir, services=("sandbox", "api", "email_worker", "scheduler")) as stack:
        stack.start_replica("api", "api_2")
        for worker in WORKERS[1:]:
            stack.start_replica("email_worker", worker)
        yield stack


def _email(index: int) -> dict[str, object]:
    return {
        "channel": "email",
        "recipient": f"scale-{index}@example.com",
        "content": {"subject": f"#{index}", "body": "scale-out"},
    }


def test_two_gateways_and_three_workers_deliver_each_notification_exactly_once(
    replicated: Stack, private: Infrastructure
) -> None:
    key = private.create_tenant_with_key("scale-out", Scope.SEND, Scope.READ)
    auth = {"Authorization": f"Bearer {key}"}
    clients = [httpx.Client(base_url=replicated.gateway_url(gw), headers=auth, timeout=60) for gw in GATEWAYS]
    indexes = itertools.count()
    batches = [[_email(next(indexes)) for _ in range(BATCH_SIZE)] for _ in range(BATCHES)]
    singles = [_email(next(indexes)) for _ in range(SINGLE_SENDS)]
    total = BATCHES * BATCH_SIZE + SINGLE_SENDS

    def send_batch(number: int) -> int:
        client = clients[number % len(clients)]
        response = client.post("/v1/notifications/batch", json={"notifications": batches[number]})
        assert response.status_code == 202, response.text
        return int(response.json()["accepted"])

    def send_one(number: int) -> int:
        response = clients[number % len(clients)].post("/v1/notifications", json=singles[number])
        assert response.status_code == 202, response.text
        return 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        accepted = sum(pool.map(send_batch, range(BATCHES))) + sum(pool.map(send_one, range(SINGLE_SENDS)))
    assert accepted == total

    with replicated.sandbox() as sandbox:

        def all_arrived() -> dict[str, object] | None:
            stats = sandbox.get("/api/stats").json()
            return stats if stats["total"] >= total else None

        stats = wait_until(all_arrived, timeout=90, what=f"{total} emails at the sandbox")
        # Every notification once: as many distinct Message-IDs as sent, and no repeated send.
        assert stats["total"] == total and stats["repeats"] == 0, stats

    delivered = {worker: metric_value(replicated.metrics_url(worker), DELIVERED) for worker in WORKERS}
    assert sum(delivered.values()) == total, delivered
    assert all(count > 0 for count in delivered.values()), f"a worker delivered nothing: {delivered}"
    received = [metric_value(f"{replicated.gateway_url(name)}/metrics", ACCEPTED) for name in GATEWAYS]
    assert sum(received) == total and all(count > 0 for count in received), received
    print(f"\ndelivered per worker: {delivered}; accepted per gateway: {received}")
    for client in clients:
        client.close()
