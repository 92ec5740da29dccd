"""make bench: email through the whole system, against the Celery no-op ceiling of the same machine.

1. The ceiling: a Celery worker set up like Pulse's, draining no-op tasks (bench/ceiling.py), measured
   at the start and again at the end (the machine drifts); their mean is the ceiling.
2. A private Pulse (fresh database and vhost, the email path's services as processes) and, each
   scenario as a tenant of its own:
   - single: `--count` single sends from `--concurrency` keep-alive clients, back to back;
   - half rate: for `--half-rate-seconds`, sends paced at half the delivered/s just measured;
   - batch: `--batches` times `--batch-size` emails through the batch API from `--batch-clients`;
   - isolation: `--isolation-backlog` `low` emails accepted through the batch API, then, while they
     wait, `--isolation-critical` `critical` ones sent one at a time at `--isolation-rate` per second;
   - topic: one send to a topic of `--topic-subscribers` users (bench/topics.py): time until the
     scheduler created every notification, their delivery rate, the scheduler's memory.
   For single and batch, the CPU each process used (bench/procstats.py) per delivered notification.
3. A report: the ratio delivered/s ÷ ceiling first, then each target with PASS/FAIL, the scenarios and
   the CPU table; saved in bench/results/ (email_throughput-latest.json).

    make bench                                            # the defaults: a few minutes
    make bench BENCH_ARGS="--isolation-backlog 0"         # skip the 100k backlog
    make bench BENCH_ARGS="--ceiling-tasks 0 --count 0 --batches 0 --isolation-backlog 0 \\
        --results-name topics"                            # the topic scenario only
"""

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstats
from bench.ceiling import measure_ceiling
from bench.ledger import Ledger, Tenant
from bench.load import BATCH_PATH, SINGLE_PATH, batch_bodies, send, single_bodies
from bench.report import CpuReport, CpuRow, Scenario, as_json, print_report
from bench.topics import topic_fanout
from devtools.stack import Stack, Timeout, isolated_infrastructure, isolated_vhost, running_stack

RESULTS = Path(__file__).with_name("results")
# What the email path needs; idle workers of other channels would only take CPU from it.
EMAIL_PATH = ("sandbox", "api", "email_worker", "email_worker_urgent", "scheduler")
POSTGRES = "postgresql"
POSTGRES_EVERY_DATABASE = "postgresql, every database"  # for reference, not in the totals
LOAD_GENERATOR = "load generator"
STARTED = time.monotonic()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000, help="single sends (0 skips them and half rate)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the single sends")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=16,
        help="the email worker's PULSE_EMAIL_WORKER_CONCURRENCY (the ceiling's worker reads the same)",
    )
    parser.add_argument(
        "--ceiling-tasks", type=int, default=10_000, help="no-op tasks per ceiling run (0 skips the ceiling)"
    )
    parser.add_argument("--half-rate-seconds", type=float, default=10.0, help="0 skips the half-rate run")
    parser.add_argument("--batches", type=int, default=10, help="batch requests (0 skips the batch run)")
    parser.add_argument("--batch-size", type=int, default=1000, help="emails per batch request")
    parser.add_argument("--batch-clients", type=int, default=4, help="clients sending the batches")
    parser.add_argument("--isolation-backlog", type=int, default=100_000, help="low emails queued (0 skips)")
    parser.add_argument(
        "--isolation-critical", type=int, default=200, help="critical emails sent behind them"
    )
    parser.add_argument("--isolation-rate", type=float, default=20.0, help="critical emails per second")
    parser.add_argument(
        "--topic-subscribers", type=int, default=100_000, help="subscribers of the topic sent to (0 skips)"
    )
    parser.add_argument(
        "--results-name",
        default="email_throughput",
        help="results are saved as bench/results/<name>-latest.json (and -<time>.json)",
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    log_dir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    progress(f"logs: {log_dir}")
    worker_env = {"PULSE_EMAIL_WORKER_CONCURRENCY": str(args.worker_concurrency)}
    ceiling = {"start": ceiling_run(args.ceiling_tasks, worker_env, log_dir)} if args.ceiling_tasks else {}
    with (
        isolated_infrastructure("pulse_bench") as infrastructure,
        # The isolation backlog is one tenant's 100,000 sends in a minute or two: more than the default
        # tenant quota lets through, which is the point of a quota, not of this measurement.
        running_stack(
            infrastructure, log_dir, {**worker_env, "PULSE_TENANT_SENDS_PER_MINUTE": "0"}, services=EMAIL_PATH
        ) as stack,
    ):
        progress(f"Pulse started: {', '.join(EMAIL_PATH)}")
        ledger = Ledger(infrastructure)
        bench = Bench(stack, ledger, observed(stack, ledger))
        try:
            scenarios = bench.run_all(args)
            peak_rss = bench.peak_rss_mib()
        finally:
            ledger.close()
    progress("Pulse stopped; its database and vhost dropped")
    if ceiling:
        ceiling["end"] = ceiling_run(args.ceiling_tasks, worker_env, log_dir)
        ceiling["mean"] = round((ceiling["start"] + ceiling["end"]) / 2, 1)
        for name in ("single", "batch"):
            if scenario := scenarios.get(name):
                scenario.ratio_to_ceiling = round(scenario.delivered_per_second / ceiling["mean"], 3)
    judged = print_report(scenarios, ceiling, peak_rss)
    results: dict[str, Any] = {
        "targets": as_json(judged),
        "ceiling_tasks_per_second": ceiling,
        "scenarios": {name: asdict(scenario) for name, scenario in scenarios.items()},
        "peak_rss_mib": peak_rss,
        "settings": vars(args),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
        f"Python {platform.python_version()}",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_seconds": round(time.monotonic() - STARTED),
    }
    save(results, args.results_name)


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", flush=True)


def ceiling_run(tasks: int, worker_env: dict[str, str], log_dir: Path) -> float:
    with isolated_vhost("pulse_bench_ceiling") as broker_url:
        per_second = measure_ceiling(broker_url, tasks=tasks, worker_env=worker_env, log_dir=log_dir)
    progress(f"Celery no-op ceiling: {per_second:.1f} tasks/s")
    return round(per_second, 1)


def observed(stack: Stack, ledger: Ledger) -> dict[str, procstats.Selector]:
    """The processes whose CPU and memory are reported: each service (with any children), PostgreSQL,
    RabbitMQ and this process."""
    groups = {name: procstats.service(pid) for name, pid in stack.pids.items()}

    def bench_postgres(table: procstats.Table) -> list[procstats.ProcessStat]:
        """The postmaster, its background processes and the bench database's backends: the backends
        of other databases (other people's tests on a shared machine) are left out, and so is a backend
        still connecting (pg_stat_activity does not list it yet)."""
        server = procstats.oldest("postgres", table)
        if server is None:
            return []
        ours = ledger.bench_database_processes() | {server.pid}
        return [stat for stat in procstats.with_descendants([server.pid], table) if stat.pid in ours]

    groups[POSTGRES] = bench_postgres
    groups[POSTGRES_EVERY_DATABASE] = lambda table: procstats.oldest_tree("postgres", table)
    groups["rabbitmq"] = lambda table: procstats.oldest_tree("beam.smp", table)
    groups[LOAD_GENERATOR] = procstats.single(os.getpid())
    return groups


class Bench:
    def __init__(self, stack: Stack, ledger: Ledger, groups: dict[str, procstats.Selector]) -> None:
        self.stack, self.ledger, self.groups = stack, ledger, groups

    @property
    def api_port(self) -> int:
        return self.stack.ports["api"]

    def run_all(self, args: argparse.Namespace) -> dict[str, Scenario]:
        warm_up = self.ledger.tenant("warm-up")
        send(self.api_port, warm_up.api_key, SINGLE_PATH, single_bodies(100, label="warm-up"), clients=8)
        self.ledger.wait_finished(warm_up, timeout=60)
        scenarios = []
        if args.count:
            single = self.single(args.count, clients=args.concurrency)
            scenarios.append(single)
            if args.half_rate_seconds:
                scenarios.append(
                    self.half_rate(single.delivered_per_second / 2, args.half_rate_seconds, args.concurrency)
                )
        if args.batches:
            scenarios.append(self.batch(args.batches, size=args.batch_size, clients=args.batch_clients))
        if args.isolation_backlog:
            scenarios.append(self.isolation(args))
        if args.topic_subscribers:
            scenarios.append(
                topic_fanout(
                    self.stack,
                    self.ledger,
                    self.groups,
                    subscribers=args.topic_subscribers,
                    cpu_report=cpu_report,
                    progress=progress,
                )
            )
        return {scenario.name: scenario for scenario in scenarios}

    def single(self, count: int, *, clients: int) -> Scenario:
        tenant = self.ledger.tenant("single")
        bodies = single_bodies(count, label="single")
        return self._measured("single", tenant, SINGLE_PATH, bodies, count=count, clients=clients)

    def batch(self, batches: int, *, size: int, clients: int) -> Scenario:
        tenant = self.ledger.tenant("batch")
        bodies = batch_bodies(batches * size, size=size, label="batch")
        return self._measured("batch", tenant, BATCH_PATH, bodies, count=batches * size, clients=clients)

    def _measured(
        self, name: str, tenant: Tenant, path: str, bodies: list[bytes], *, count: int, clients: int
    ) -> Scenario:
        """Send, wait until every notification is delivered, and what each process spent meanwhile."""
        with procstats.CpuTracker(self.groups) as cpu:
            sent = send(self.api_port, tenant.api_key, path, bodies, clients=clients)
            self.ledger.wait_finished(tenant, timeout=_drain_timeout(count))
        outcome = self.ledger.outcome(tenant)
        scenario = Scenario.of(name, outcome, sent=count, clients=clients, send_seconds=sent.seconds)
        scenario.cpu = cpu_report(cpu, outcome.delivered)
        progress(scenario.line())
        return scenario

    def half_rate(self, per_second: float, seconds: float, clients: int) -> Scenario:
        """Open-loop sends at `per_second`: the latency a system shows when it is not saturated."""
        tenant = self.ledger.tenant("half-rate")
        count = max(1, round(per_second * seconds))
        bodies = single_bodies(count, label="half-rate")
        sent = send(
            self.api_port, tenant.api_key, SINGLE_PATH, bodies, clients=clients, per_second=per_second
        )
        self.ledger.wait_finished(tenant, timeout=_drain_timeout(count))
        scenario = Scenario.of(
            "half rate", self.ledger.outcome(tenant), sent=count, clients=clients, send_seconds=sent.seconds
        )
        scenario.details = {"paced_per_second": round(per_second, 1), "max_late_ms": sent.max_late_ms}
        progress(scenario.line())
        return scenario

    def isolation(self, args: argparse.Namespace) -> Scenario:
        """`critical` sends while a backlog of `low` ones waits: how long the critical ones take."""
        backlog, critical = self.ledger.tenant("backlog"), self.ledger.tenant("critical")
        bodies = batch_bodies(args.isolation_backlog, size=args.batch_size, label="backlog", priority="low")
        queued = send(self.api_port, backlog.api_key, BATCH_PATH, bodies, clients=args.batch_clients)
        progress(
            f"isolation: {args.isolation_backlog} low accepted in {queued.seconds:.1f} s "
            f"({args.isolation_backlog / queued.seconds:.1f}/s)"
        )
        bodies = single_bodies(args.isolation_critical, label="critical", priority="critical")
        sent = send(
            self.api_port, critical.api_key, SINGLE_PATH, bodies, clients=1, per_second=args.isolation_rate
        )
        backlog_left = self.ledger.pending(backlog)
        try:
            self.ledger.wait_finished(critical, timeout=60)
            undelivered = 0
        except Timeout:
            undelivered = self.ledger.pending(critical)
        scenario = Scenario.of(
            "isolation",
            self.ledger.outcome(critical),
            sent=args.isolation_critical,
            clients=1,
            send_seconds=sent.seconds,
        )
        scenario.details = {
            "backlog_low": args.isolation_backlog,
            "backlog_accepted_per_second": round(args.isolation_backlog / queued.seconds, 1),
            # Still waiting when the last critical one was accepted: the backlog was really there.
            "backlog_left_after_critical_sends": backlog_left,
            "critical_per_second": args.isolation_rate,
            "critical_undelivered_after_60_s": undelivered,
            "max_late_ms": sent.max_late_ms,
        }
        progress(scenario.line())
        return scenario

    def peak_rss_mib(self) -> dict[str, float]:
        """Peak resident memory (VmHWM) of each group's processes, summed; PostgreSQL's is left out, as
        each backend counts the shared buffers it touched."""
        table = procstats.process_table()
        peaks = {}
        for name, select in self.groups.items():
            if name not in (POSTGRES, POSTGRES_EVERY_DATABASE):
                values = [procstats.peak_rss_mib(stat.pid) or 0.0 for stat in select(table)]
                peaks[name] = round(sum(values), 1)
        return peaks


def _drain_timeout(count: int) -> float:
    return 120 + count / 20


def cpu_report(cpu: procstats.CpuTracker, delivered: int) -> CpuReport:
    rows = [
        CpuRow(
            name=name,
            processes=usage.processes,
            exited=usage.exited,
            cpu_seconds=round(usage.seconds, 2),
            ms_per_notification=round(usage.seconds * 1000 / delivered, 3),
            core_share=round(usage.seconds / cpu.seconds, 3),
            in_sum=name != POSTGRES_EVERY_DATABASE,
        )
        for name, usage in cpu.usage().items()
    ]
    return CpuReport(
        window_seconds=round(cpu.seconds, 2),
        delivered=delivered,
        rows=rows,
        machine_busy_cpu_seconds=round(cpu.machine_busy_seconds, 2),
        cores=os.cpu_count() or 1,
    )


def save(results: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    body = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    (RESULTS / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(body, encoding="utf-8")
    (RESULTS / f"{name}-latest.json").write_text(body, encoding="utf-8")


if __name__ == "__main__":
    main()
