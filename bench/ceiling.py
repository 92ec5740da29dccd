"""The Celery no-op ceiling: how fast a plain Celery worker drains a queue when its task does nothing.
Pulse's delivered/s divided by this is the share of the machine's Celery capacity that Pulse turns
into deliveries.

The worker is a plain Celery worker as Pulse's email worker would be without batching: `make_celery`
with a queue (acks late), a thread pool with as many threads as the email worker has sends in flight
(`PULSE_EMAIL_WORKER_CONCURRENCY`) and Celery's default prefetch (4 per thread) — how the issue that
set the target measured it; the queue is one durable quorum queue, as Pulse's work queues are.
`measure_ceiling` fills the queue first (not timed), then starts the worker as a separate process;
the worker's task notes when the first and the last task ran, and the ceiling is tasks ÷ that span.

    python -m bench.ceiling --broker amqp://…/vhost --tasks 5000 --report out.json
runs such a worker by itself (what `measure_ceiling` starts).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from celery import Celery
from kombu import Connection, Exchange, Queue

from devtools.stack import REPO, free_port, wait_until
from pulse.messaging.celery_app import make_celery
from pulse.messaging.depths import ready_messages
from pulse.settings import BrokerSettings
from services.email_worker.settings import EmailWorkerSettings

CELERY_DEFAULT_PREFETCH_MULTIPLIER = 4

# A topic exchange like Pulse's, so that Celery binds the queue for native delayed delivery as it
# does Pulse's queues at start-up.
QUEUE = Queue(
    "bench.ceiling",
    Exchange("bench.ceiling", type="topic", durable=True),
    routing_key="noop",
    durable=True,
    queue_arguments={"x-queue-type": "quorum"},
)
TASK = "bench.ceiling.noop"


def ceiling_app(broker_url: str) -> Celery:
    return make_celery("bench-ceiling", BrokerSettings(url=broker_url), queues=[QUEUE])


def measure_ceiling(broker_url: str, *, tasks: int, worker_env: Mapping[str, str], log_dir: Path) -> float:
    """Tasks per second: fill the queue with `tasks` no-op tasks, then time a fresh worker draining it.
    `worker_env` is what the bench gives its email worker (PULSE_EMAIL_WORKER_…)."""
    app = ceiling_app(broker_url)
    with app.connection_for_write() as connection:
        QUEUE.bind(connection.default_channel).declare()
        QUEUE.bind(connection.default_channel).purge()
        with app.producer_or_acquire() as producer:
            for _ in range(tasks):
                app.send_task(TASK, queue=QUEUE, producer=producer)
        wait_until(lambda: _depth(connection) == tasks, timeout=60, what=f"{tasks} tasks in {QUEUE.name}")
        report = log_dir / f"ceiling-{time.monotonic_ns()}.json"
        with (log_dir / "ceiling-worker.log").open("ab") as log:
            worker = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bench.ceiling", "--broker", broker_url),
                    *("--tasks", str(tasks), "--report", str(report)),
                ],
                cwd=REPO,
                env={**os.environ, **worker_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:

            def drained() -> bool:
                if worker.poll() is not None:
                    raise RuntimeError(f"the ceiling worker exited with {worker.returncode}; see {log.name}")
                return report.exists()

            wait_until(drained, timeout=120 + tasks / 50, interval=0.2, what="the ceiling worker to drain")
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        QUEUE.bind(connection.default_channel).delete()
    seconds = float(json.loads(report.read_text())["seconds"])
    report.unlink()
    return tasks / seconds


def _depth(connection: Connection) -> int:
    return ready_messages(connection.default_channel, QUEUE.name)


class _Drain:
    """Notes when the first and the last of `expected` tasks ran; writes the span at the last."""

    def __init__(self, expected: int, report: Path) -> None:
        self.expected, self.report = expected, report
        self.first = 0.0
        self.ran = 0
        self.lock = threading.Lock()

    def ran_one(self) -> None:
        now = time.monotonic()
        with self.lock:
            self.ran += 1
            if self.ran == 1:
                self.first = now
            if self.ran == self.expected:
                # Written aside and renamed, so the harness never reads half a file.
                partial = self.report.with_suffix(".partial")
                partial.write_text(json.dumps({"seconds": now - self.first}))
                partial.rename(self.report)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", required=True, help="AMQP URL of the vhost holding the filled queue")
    parser.add_argument("--tasks", type=int, required=True, help="tasks in the queue")
    parser.add_argument("--report", type=Path, required=True, help="where to write the drain's seconds")
    args = parser.parse_args()

    app = ceiling_app(args.broker)
    drain = _Drain(args.tasks, args.report)
    app.task(name=TASK)(drain.ran_one)
    settings = EmailWorkerSettings(metrics_port=free_port())
    app.worker_main(
        [
            "--quiet",
            "worker",
            "--pool=threads",
            f"--concurrency={settings.concurrency}",
            f"--prefetch-multiplier={CELERY_DEFAULT_PREFETCH_MULTIPLIER}",
            "--hostname=ceiling@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
