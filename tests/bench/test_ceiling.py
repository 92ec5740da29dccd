"""The Celery no-op ceiling `make bench` divides by: a worker set up like Pulse's drains every task."""

from pathlib import Path

from bench.ceiling import measure_ceiling
from devtools.stack import isolated_vhost


def test_a_fresh_worker_runs_every_queued_task_and_the_drain_is_timed(tmp_path: Path) -> None:
    with isolated_vhost("pulse_test_ceiling") as broker_url:
        # Returns only once the worker has run all 300 (it reports at the last one).
        per_second = measure_ceiling(
            broker_url, tasks=300, worker_env={"PULSE_EMAIL_WORKER_CONCURRENCY": "4"}, log_dir=tmp_path
        )

    assert 0 < per_second < float("inf")
    assert "ceiling@" in (tmp_path / "ceiling-worker.log").read_text()  # it ran as its own worker
