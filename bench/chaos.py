"""make chaos: notifications through the whole system while its parts are killed and restarted.

Starts a private Pulse (own database and vhost, services as processes, the sandbox as SMTP relay with
5 % transient failures), sends `--count` notifications of mixed priorities through the gateway (each
with an Idempotency-Key, retried by the client until accepted, as a careful client does), and
meanwhile:

  kill -9 the email worker, the scheduler and the gateway (each restarted),
  restarts RabbitMQ (rabbitmqctl stop_app / start_app) and PostgreSQL (pg_ctlcluster restart).

Then it waits until every accepted notification is delivered or failed and reports: accepted,
delivered, failed, lost (accepted but not finished, or marked delivered but never received),
duplicates (notifications that reached the inbox twice) and the repeated sends that the stable
Message-ID let the receiver collapse (a worker killed after the relay accepted a mail but before
Pulse recorded it sends it again: delivery is at-least-once, deduplicated by identity). Exit status 1
on any loss or duplicate.

Only 127.0.0.1 is touched; restarting RabbitMQ and PostgreSQL needs root on their machine
(skip them with --no-broker-restart / --no-database-restart).
"""

import argparse
import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from devtools.stack import Stack, isolated_infrastructure, running_stack, wait_until
from pulse.tenants.service import Scope
from pulse.vocabulary import Priority

RESULTS = Path(__file__).with_name("results")
# Short leases and quick rechecks, so that what a kill interrupts is recovered within seconds.
CHAOS_ENV = {
    "PULSE_EMAIL_WORKER_CONCURRENCY": "8",
    "PULSE_EMAIL_WORKER_CLAIM_LEASE_SECONDS": "5",
    "PULSE_SCHEDULER_TICK_SECONDS": "0.2",
    "PULSE_SCHEDULER_RETRY_OVERDUE_SECONDS": "5",
    "PULSE_PUBLISH_GRACE_SECONDS": "1",
    # 3000 sends to 97 addresses within minutes: far over the default rate limit, which is not on trial.
    "PULSE_RATE_LIMIT": "0",
    **{f"PULSE_RETRY_{priority.upper()}_BASE_SECONDS": "1" for priority in Priority},
    **{f"PULSE_RETRY_{priority.upper()}_CAP_SECONDS": "2" for priority in Priority},
    # Enough attempts that 5 % transient failures practically never exhaust a budget.
    **{f"PULSE_RETRY_{priority.upper()}_ATTEMPTS": "8" for priority in Priority},
}


@dataclass
class Sender:
    """Clients that keep trying each notification (same Idempotency-Key) until it is accepted."""

    api_url: str
    api_key: str
    count: int
    accepted: dict[int, str] = field(default_factory=dict)
    client_retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, concurrency: int, deadline: float) -> None:
        indexes = iter(range(self.count))
        threads = [
            threading.Thread(target=self._send_from, args=(indexes, deadline), daemon=True)
            for _ in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _send_from(self, indexes: Iterator[int], deadline: float) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=self.api_url, headers=headers, timeout=10) as client:
            while True:
                with self._lock:
                    index = next(indexes, None)
                if index is None:
                    return
                body = _notification(index)
                while time.monotonic() < deadline:
                    try:
                        response = client.post(
                            "/v1/notifications", json=body, headers={"Idempotency-Key": f"chaos-{index}"}
                        )
                        if response.status_code in (200, 202):
                            with self._lock:
                                self.accepted[index] = response.json()["id"]
                            break
                    except httpx.HTTPError:
                        pass
                    with self._lock:
                        self.client_retries += 1
                    time.sleep(0.2)


def _notification(index: int) -> dict[str, Any]:
    priorities = list(Priority)
    content: dict[str, str] = {"subject": f"Chaos {index}", "body": f"Message {index}"}
    if index % 2:
        content["html"] = f"<p>Message {index}</p>"
    return {
        "channel": "email",
        "recipient": f"chaos-{index % 97}@example.com",
        "priority": priorities[index % len(priorities)],
        "content": content,
    }


def _postgres_restart() -> None:
    version = sorted(path.name for path in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        timeout=120,
    )


def _rabbitmq_restart() -> None:
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    time.sleep(3)  # An outage, not a blip: publishers must fall back on the outbox meanwhile.
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)


def chaos_plan(stack: Stack, *, broker: bool, database: bool) -> list[tuple[str, Callable[[], None]]]:
    def kill_and_restart(name: str) -> Callable[[], None]:
        def act() -> None:
            stack.kill(name)
            stack.start(name)

        return act

    plan = [
        ("kill -9 email worker", kill_and_restart("email_worker")),
        ("kill -9 scheduler", kill_and_restart("scheduler")),
        ("kill -9 api", kill_and_restart("api")),
    ]
    if broker:
        plan.append(("restart RabbitMQ", _rabbitmq_restart))
    if database:
        plan.append(("restart PostgreSQL", _postgres_restart))
    plan.append(("kill -9 email worker again", kill_and_restart("email_worker")))
    return plan


def run(
    count: int, concurrency: int, deadline_seconds: float, *, broker: bool, database: bool
) -> dict[str, Any]:
    events: list[str] = []
    with isolated_infrastructure("pulse_chaos") as infrastructure:
        api_key = infrastructure.create_tenant_with_key("chaos", Scope.SEND, Scope.READ)
        log_dir = Path(tempfile.mkdtemp(prefix="pulse-chaos-"))
        with running_stack(infrastructure, log_dir, CHAOS_ENV) as stack:
            with stack.sandbox() as sandbox:
                sandbox.post(
                    "/api/faults", json={"endpoint": "smtp", "status": 451, "rate": 0.05}
                ).raise_for_status()
            started = time.monotonic()
            deadline = started + deadline_seconds
            sender = Sender(stack.api_url, api_key, count)
            sending = threading.Thread(target=sender.run, args=(concurrency, deadline), daemon=True)
            sending.start()
            plan = chaos_plan(stack, broker=broker, database=database)
            for step, (name, act) in enumerate(plan, start=1):
                # Spread the faults over the sending: each strikes after a share of the work is accepted.
                wanted = step / (len(plan) + 1) * count

                def far_enough(wanted: float = wanted) -> bool:
                    return len(sender.accepted) >= wanted or not sending.is_alive()

                wait_until(far_enough, timeout=deadline_seconds, interval=0.05, what=f"{wanted:.0f} accepted")
                act()
                events.append(f"{time.monotonic() - started:6.1f}s  {name}")
                print(events[-1], flush=True)
            sending.join()
            report = _settle(infrastructure.database_url, stack, sender, deadline)
    report.update(
        count=count,
        client_retries=sender.client_retries,
        events=events,
        seconds=round(time.monotonic() - started, 1),
        logs=str(log_dir),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return report


def _settle(database_url: str, stack: Stack, sender: Sender, deadline: float) -> dict[str, Any]:
    """Wait until every accepted notification is finished (or the deadline passes), then count."""
    accepted = [uuid.UUID(notification_id) for notification_id in sender.accepted.values()]
    engine = create_engine(database_url, pool_pre_ping=True)

    def statuses() -> Counter[str]:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT status, count(*) FROM notifications WHERE id = ANY(:ids) GROUP BY status"),
                {"ids": accepted},
            ).all()
        return Counter({row.status: row.count for row in rows})

    def finished() -> bool:
        counts = statuses()
        return counts["delivered"] + counts["failed"] == len(accepted)

    try:
        wait_until(finished, timeout=max(1.0, deadline - time.monotonic()), interval=0.5, what="quiescence")
    except Exception as timeout:  # noqa: BLE001 - what is unfinished is reported below as lost.
        print(timeout)
    counts = statuses()
    with engine.connect() as connection:
        delivered = set(
            connection.scalars(
                text("SELECT id::text FROM notifications WHERE id = ANY(:ids) AND status = 'delivered'"),
                {"ids": accepted},
            )
        )
    engine.dispose()
    with stack.sandbox() as sandbox:
        items = sandbox.get("/api/messages", params={"limit": 10_000}).json()["items"]
        repeats = sandbox.get("/api/stats").json()["repeats"]
    received = Counter(item["headers"].get("X-Pulse-Notification-Id") for item in items)
    unfinished = len(accepted) - counts["delivered"] - counts["failed"]
    never_received = len(delivered - set(received))
    return {
        "accepted": len(accepted),
        "not_accepted": sender.count - len(accepted),
        "delivered": counts["delivered"],
        "failed": counts["failed"],
        "lost": unfinished + never_received,
        "unfinished": unfinished,
        "delivered_but_never_received": never_received,
        # Two messages in the inbox for one notification: what a recipient would see twice.
        "duplicates": sum(times - 1 for times in received.values() if times > 1),
        # Sends repeated after a kill -9 between the provider's acceptance and our record of it
        # (at-least-once); the stable Message-ID let the receiver collapse each into its original.
        "repeated_sends_absorbed_by_message_id": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--deadline", type=float, default=300, help="seconds for sending and settling")
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--no-database-restart", action="store_true")
    args = parser.parse_args()
    report = run(
        args.count,
        args.concurrency,
        args.deadline,
        broker=not args.no_broker_restart,
        database=not args.no_database_restart,
    )
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chaos-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    raise SystemExit(1 if report["lost"] or report["not_accepted"] or report["duplicates"] else 0)


if __name__ == "__main__":
    main()
