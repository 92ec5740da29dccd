"""What `make bench` found, as data (saved as JSON) and as the text it prints: the ratio to the Celery
ceiling first, then every target with PASS/FAIL, the scenarios, and the CPU and memory per process."""

from dataclasses import dataclass, field
from typing import Any

from bench.ledger import Outcome
from bench.procstats import OBSERVATION_SECONDS


@dataclass
class CpuRow:
    name: str
    processes: int
    exited: int  # processes gone during the window, counted up to their last observation
    cpu_seconds: float
    ms_per_notification: float
    core_share: float  # of one core, over the window
    in_sum: bool = True  # False for a reference line that overlaps others


@dataclass
class CpuReport:
    window_seconds: float  # just before the first send → just after the last delivery was seen
    delivered: int
    rows: list[CpuRow]
    machine_busy_cpu_seconds: float  # every process on the machine (/proc/stat), to check the sum against
    cores: int


@dataclass
class Scenario:
    name: str
    sent: int
    clients: int
    accepted_per_second: float
    delivered: int
    failed: int
    delivered_per_second: float
    latency_ms: dict[str, float | None]
    ratio_to_ceiling: float | None = None
    cpu: CpuReport | None = None
    details: dict[str, float | int] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, outcome: Outcome, *, sent: int, clients: int, send_seconds: float) -> "Scenario":
        return cls(
            name=name,
            sent=sent,
            clients=clients,
            accepted_per_second=round(sent / send_seconds, 1),
            delivered=outcome.delivered,
            failed=outcome.failed,
            delivered_per_second=outcome.delivered_per_second,
            latency_ms=outcome.latency_ms,
        )

    def line(self) -> str:
        latency = "/".join(_number(self.latency_ms[p]) for p in ("p50", "p95", "p99"))
        failed = f", {self.failed} failed" if self.failed else ""
        details = "".join(f", {key} {value}" for key, value in self.details.items())
        return (
            f"{self.name}: {self.sent} sent by {self.clients} client(s), "
            f"accepted {self.accepted_per_second}/s, "
            f"delivered {self.delivered}{failed} at {self.delivered_per_second}/s, "
            f"accepted → delivered p50/p95/p99 {latency} ms{details}"
        )


@dataclass
class Target:
    name: str
    value: float | None  # None: nothing to judge by (counts as FAIL)
    unit: str
    limit: float | None  # None: reported, no target
    at_least: bool = False  # the value must be ≥ limit, else ≤
    invalid: bool = False  # this run cannot judge it (the note says why)
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.limit is None:
            return ""
        if self.invalid:
            return "n/a"
        if self.value is None:
            return "FAIL"
        met = self.value >= self.limit if self.at_least else self.value <= self.limit
        return "PASS" if met else "FAIL"

    def line(self) -> str:
        sign = "≥" if self.at_least else "≤"
        goal = "no target" if self.limit is None else f"{sign} {_number(self.limit)}{self.unit}"
        value = f"{_number(self.value)}{self.unit}"
        note = f"  ({self.note})" if self.note else ""
        return f"  {self.name:<44} {value:>10}  {goal:<10} {self.verdict}{note}"


def targets(scenarios: dict[str, Scenario]) -> list[Target]:
    found = []
    if single := scenarios.get("single"):
        found.append(Target("single sends: delivered/s ÷ ceiling", single.ratio_to_ceiling, "", None))
    if batch := scenarios.get("batch"):
        found.append(
            Target("batch sends: delivered/s ÷ ceiling", batch.ratio_to_ceiling, "", 1.0, at_least=True)
        )
    if isolation := scenarios.get("isolation"):
        undelivered = isolation.details["critical_undelivered_after_60_s"]
        backlog_gone = not isolation.details["backlog_left_after_critical_sends"]
        note = f"{undelivered} critical not delivered 60 s after the last send" if undelivered else ""
        if backlog_gone:
            note = "the backlog was gone before the last critical send: raise --isolation-backlog"
        found.append(
            Target(
                f"critical p99 behind {isolation.details['backlog_low']} low",
                None if undelivered else isolation.latency_ms["p99"],
                " ms",
                250,
                invalid=backlog_gone,
                note=note,
            )
        )
    if topic := scenarios.get("topic"):
        found.append(
            Target(
                f"topic of {topic.sent}: every notification created",
                topic.details["created_seconds"],
                " s",
                30,
            )
        )
    if half_rate := scenarios.get("half rate"):
        found.append(
            Target(
                f"p99 at half rate ({half_rate.details['paced_per_second']}/s)",
                half_rate.latency_ms["p99"],
                " ms",
                500,
            )
        )
    return found


def print_report(
    scenarios: dict[str, Scenario], ceiling: dict[str, float], peak_rss_mib: dict[str, float]
) -> list[Target]:
    """Print the report; return the targets as judged."""
    judged = targets(scenarios)
    rule = "═" * 100
    print(f"\n{rule}")
    if (single := scenarios.get("single")) and ceiling:
        print(
            f"  PULSE ÷ CELERY NO-OP CEILING (single sends): {_number(single.ratio_to_ceiling)}"
            f"   = {single.delivered_per_second} delivered/s ÷ {ceiling['mean']} tasks/s"
        )
    if ceiling:
        print(
            f"  Celery no-op ceiling: {ceiling['start']} tasks/s at the start, {ceiling['end']} at the end,"
            f" mean {ceiling['mean']}"
        )
    print(rule)
    print("Targets")
    for target in judged:
        print(target.line())
    print("\nScenarios")
    for scenario in scenarios.values():
        print(f"  {scenario.line()}")
    print_cpu_table(scenarios, peak_rss_mib)
    return judged


def print_cpu_table(scenarios: dict[str, Scenario], peak_rss_mib: dict[str, float]) -> None:
    measured = {name: scenario.cpu for name, scenario in scenarios.items() if scenario.cpu is not None}
    if not measured:
        return
    print("\nCPU per delivered notification (utime + stime from /proc, first send → last delivery)")
    header = "".join(f" {name + ' ms/n':>13} {'% core':>7}" for name in measured)
    print(f"  {'process':<28} {'procs':>5}{header} {'peak RSS MiB':>13}")
    first = next(iter(measured.values()))
    for row in first.rows:
        cells = "".join(_cpu_cells(report, row.name) for report in measured.values())
        peak = f"{peak_rss_mib[row.name]:.1f}" if row.name in peak_rss_mib else ""
        print(f"  {row.name:<28} {row.processes:>5}{cells} {peak:>13}")
    totals = "".join(_cpu_total_cells(report) for report in measured.values())
    print(f"  {'sum (without the reference)':<28} {'':>5}{totals}")
    machine = "".join(
        f" {report.machine_busy_cpu_seconds * 1000 / report.delivered:>13.3f}"
        f" {report.machine_busy_cpu_seconds / report.window_seconds:>7.0%}"
        for report in measured.values()
    )
    print(f"  {'machine, every process':<28} {'':>5}{machine}   (/proc/stat, {first.cores} cores)")
    for name, report in measured.items():
        observed = sum(row.cpu_seconds for row in report.rows if row.in_sum)
        gone = ", ".join(f"{row.name} {row.exited}" for row in report.rows if row.exited and row.in_sum)
        print(
            f"  {name}: {report.delivered} delivered in {report.window_seconds} s; the processes above used"
            f" {observed / report.machine_busy_cpu_seconds:.0%} of the CPU the machine spent"
            + (f"; exited during it (counted up to the last look): {gone}" if gone else "")
        )
    print(
        "  postgresql: the postmaster, its background processes and the bench database's backends;\n"
        "  'postgresql, every database' adds other databases' backends (other people's tests on a shared\n"
        "  machine) and is not in the sum. rabbitmq: the whole broker, whatever vhost the work is for.\n"
        f"  Processes are looked at every {OBSERVATION_SECONDS} s: one that exits is counted up to its last\n"
        "  look, one that lives shorter is missed (many exited postgresql backends: a pool opening and\n"
        "  closing connections, which costs more than the table shows).\n"
        "  Peak RSS (VmHWM at the end, summed over a service's processes) is left out for PostgreSQL,\n"
        "  whose backends each count the shared buffers they touched."
    )


def _cpu_cells(report: CpuReport, name: str) -> str:
    row = next(row for row in report.rows if row.name == name)
    return f" {row.ms_per_notification:>13.3f} {row.core_share:>7.0%}"


def _cpu_total_cells(report: CpuReport) -> str:
    rows = [row for row in report.rows if row.in_sum]
    return (
        f" {sum(row.ms_per_notification for row in rows):>13.3f} {sum(row.core_share for row in rows):>7.0%}"
    )


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def as_json(targets: list[Target]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "value": t.value, "unit": t.unit.strip(), "limit": t.limit, "verdict": t.verdict}
        for t in targets
    ]
