"""Email throughput end to end: N notifications through the gateway to the sandbox's SMTP server.

Starts its own Pulse (fresh database and vhost, every service as a process, like the tests), sends
with `--concurrency` clients in flight, waits until every notification is delivered, and reports
accepted/s, delivered/s and the accept→delivered latency percentiles (from the stored timestamps).

    make bench                       # defaults
    make bench BENCH_ARGS="--count 20000 --concurrency 64"
"""

import argparse
import http.client
import json
import platform
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from devtools.stack import isolated_infrastructure, running_stack, wait_until
from pulse.tenants.service import Scope

RESULTS = Path(__file__).with_name("results")


def send_all(api_port: int, api_key: str, count: int, concurrency: int, run_id: str) -> float:
    """Send `count` notifications from `concurrency` keep-alive connections; returns the seconds it took.

    Plain http.client in threads: the load generator shares the machine with every service, so it
    must be cheap (an asyncio client cost more CPU than the gateway itself)."""
    indexes = iter(range(count))
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", api_port, timeout=30)
        while True:
            with lock:
                index = next(indexes, None)
            if index is None:
                connection.close()
                return
            body = {
                "channel": "email",
                "recipient": f"bench-{index % 1000}@example.com",
                "content": {"subject": f"Bench {index}", "body": "Hello from the benchmark."},
                "metadata": {"run": run_id},
            }
            connection.request("POST", "/v1/notifications", body=json.dumps(body), headers=headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 202:
                raise RuntimeError(f"unexpected {response.status}: {payload[:300]!r}")

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(sender) for _ in range(concurrency)]:
            future.result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--worker-concurrency", type=int, default=16)
    args = parser.parse_args()

    with isolated_infrastructure("pulse_bench") as infrastructure:
        api_key = infrastructure.create_tenant_with_key("bench", Scope.SEND, Scope.READ)
        log_dir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
        env = {"PULSE_EMAIL_WORKER_CONCURRENCY": str(args.worker_concurrency)}
        # What the email path needs; idle workers of other channels would only take CPU from it.
        email_path = ("sandbox", "api", "email_worker", "scheduler")
        with running_stack(infrastructure, log_dir, env, services=email_path) as stack:
            send_all(stack.ports["api"], api_key, 100, 8, "warm-up")
            run_id = uuid.uuid4().hex
            send_seconds = send_all(stack.ports["api"], api_key, args.count, args.concurrency, run_id)
            report = measure(infrastructure.database_url, run_id, args.count)

    report.update(
        count=args.count,
        concurrency=args.concurrency,
        worker_concurrency=args.worker_concurrency,
        accepted_per_second=round(args.count / send_seconds, 1),
        machine=f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"email_throughput-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    (RESULTS / "email_throughput-latest.json").write_text(json.dumps(report, indent=2) + "\n")


def measure(database_url: str, run_id: str, count: int) -> dict[str, object]:
    engine = create_engine(database_url)
    run = {"run": run_id}
    with engine.connect() as connection:

        def finished() -> bool:
            done = connection.execute(
                text(
                    "SELECT count(*) FROM notifications"
                    " WHERE metadata->>'run' = :run AND status IN ('delivered', 'failed')"
                ),
                run,
            ).scalar_one()
            connection.commit()
            return done == count

        wait_until(finished, timeout=600, interval=0.5, what=f"{count} notifications to finish")
        row = connection.execute(
            text(
                """
                SELECT count(*) FILTER (WHERE status = 'delivered') AS delivered,
                       extract(epoch FROM max(delivered_at) - min(created_at)) AS span,
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                           (ORDER BY extract(epoch FROM delivered_at - created_at)) AS latency
                FROM notifications WHERE metadata->>'run' = :run
                """
            ),
            run,
        ).one()
    engine.dispose()
    p50, p95, p99 = (round(value * 1000, 1) for value in row.latency)
    return {
        "delivered": row.delivered,
        "delivered_per_second": round(row.delivered / float(row.span), 1),
        "latency_ms_p50": p50,
        "latency_ms_p95": p95,
        "latency_ms_p99": p99,
    }


if __name__ == "__main__":
    main()
