"""What each process costs, read from /proc (Linux): CPU time over a window, and peak memory.

A *group* is a named set of processes chosen afresh at every observation (a service and its children,
the PostgreSQL server, ...). Its CPU over a window is, per process, utime + stime at its last
observation minus at the start; a process that appeared in between counts whole. Processes are told
apart by pid and start time, so a reused pid is a new process.
"""

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
OBSERVATION_SECONDS = 0.5  # how often a CpuTracker looks, cheap enough for the load generator


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    ppid: int
    name: str  # the kernel's short name (comm), e.g. `postgres`, `beam.smp`, `python`
    started: int  # clock ticks after boot; with the pid, identifies the process
    cpu_ticks: int  # utime + stime, this process's own threads (not its waited-for children)

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.started


def read_stat(pid: int, proc: Path = PROC) -> ProcessStat | None:
    """The process's /proc/<pid>/stat; None once it has gone."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name is in parentheses and may itself hold spaces and parentheses: split at the last ")".
    head, _, tail = raw.rpartition(")")
    fields = tail.split()  # fields[0] is proc(5)'s field 3 (state)
    return ProcessStat(
        pid=pid,
        ppid=int(fields[1]),
        name=head.partition("(")[2],
        started=int(fields[19]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
    )


def process_table(proc: Path = PROC) -> dict[int, ProcessStat]:
    """Every process visible now, by pid."""
    table = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name), proc)) is not None:
            table[stat.pid] = stat
    return table


Table = Mapping[int, ProcessStat]
Selector = Callable[[Table], list[ProcessStat]]


def with_descendants(roots: Iterable[int], table: Table) -> list[ProcessStat]:
    """The processes `roots` and everything they started (walking ppid), as far as still running."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, pending = [], [pid for pid in roots if pid in table]
    while pending:
        pid = pending.pop()
        found.append(table[pid])
        pending.extend(children.get(pid, ()))
    return found


def oldest(name: str, table: Table) -> ProcessStat | None:
    """The longest-running process called `name`: a server's main process, not one of the short-lived
    namesakes its command-line tools start (rabbitmqctl runs a `beam.smp` of its own)."""
    return min(
        (stat for stat in table.values() if stat.name == name), key=lambda stat: stat.started, default=None
    )


def oldest_tree(name: str, table: Table) -> list[ProcessStat]:
    """That server process with its descendants."""
    server = oldest(name, table)
    return with_descendants([server.pid], table) if server else []


def service(pid: int) -> Selector:
    """A service process and its children (uvicorn --workers, a prefork pool)."""
    return lambda table: with_descendants([pid], table)


def single(pid: int) -> Selector:
    """One process alone (the load generator, whose children are the services)."""
    return lambda table: [table[pid]] if pid in table else []


def machine_busy_ticks(proc: Path = PROC) -> int:
    """user + nice + system + irq + softirq + steal of all CPUs (guest time is inside user)."""
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return user + nice + system + irq + softirq + steal


@dataclass(frozen=True)
class GroupCpu:
    seconds: float
    processes: int  # members at the end
    exited: int  # seen in the window but not at its end: counted up to their last observation


class CpuTracker:
    """The CPU each group uses inside a `with` block, observed every `interval` seconds in
    between, so that a process that exits meanwhile (a database connection a pool closed) counts up
    to its last observation instead of not at all."""

    def __init__(
        self, groups: Mapping[str, Selector], *, interval: float = OBSERVATION_SECONDS, proc: Path = PROC
    ) -> None:
        self.groups, self.interval, self.proc = groups, interval, proc
        self._first: dict[str, dict[tuple[int, int], int]] = {name: {} for name in groups}
        self._last: dict[str, dict[tuple[int, int], int]] = {name: {} for name in groups}
        self._members: dict[str, int] = {}
        self._observations = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._observe_until_stopped, daemon=True)
        self._failure: BaseException | None = None
        self.seconds = 0.0
        self.machine_busy_seconds = 0.0

    def __enter__(self) -> "CpuTracker":
        self._started_at, self._busy_at_start = time.monotonic(), machine_busy_ticks(self.proc)
        self.observe(process_table(self.proc))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Observe a last time (`usage()` is then the CPU of each group over the window)."""
        self._stopped.set()
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        self.observe(process_table(self.proc))
        self.seconds = time.monotonic() - self._started_at
        self.machine_busy_seconds = (machine_busy_ticks(self.proc) - self._busy_at_start) / TICKS_PER_SECOND

    def observe(self, table: Table) -> None:
        for name, select in self.groups.items():
            members = {stat.key: stat.cpu_ticks for stat in select(table)}
            if self._observations == 0:
                self._first[name] = dict(members)
            self._last[name].update(members)
            self._members[name] = len(members)
        self._observations += 1

    def usage(self) -> dict[str, GroupCpu]:
        result = {}
        for name, last in self._last.items():
            first = self._first[name]
            ticks = sum(value - first.get(key, 0) for key, value in last.items())
            members = self._members[name]
            result[name] = GroupCpu(ticks / TICKS_PER_SECOND, processes=members, exited=len(last) - members)
        return result

    def _observe_until_stopped(self) -> None:
        try:
            while not self._stopped.wait(self.interval):
                self.observe(process_table(self.proc))
        except BaseException as failure:  # noqa: BLE001 - raised again on leaving the block
            self._failure = failure


def peak_rss_mib(pid: int, proc: Path = PROC) -> float | None:
    """The process's peak resident memory so far (VmHWM); None once it has gone."""
    return _memory_mib(pid, "VmHWM", proc)


def rss_mib(pid: int, proc: Path = PROC) -> float | None:
    """The process's resident memory now (VmRSS); None once it has gone."""
    return _memory_mib(pid, "VmRSS", proc)


def _memory_mib(pid: int, field: str, proc: Path) -> float | None:
    try:
        status = (proc / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return None
