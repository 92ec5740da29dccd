"""What each process costs, read from /proc (Linux): CPU time between two samples, and peak memory.

A *group* is a named set of processes chosen afresh at every sample (a service and its children, every
`postgres` process, ...). Its CPU over a window is, per process, utime + stime at the end minus at the
start; a process that appeared in between counts whole, one that exited in between is lost (reported
as `exited`). Processes are told apart by pid and start time, so a reused pid is a new process.
"""

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


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


def oldest_tree(name: str, table: Table) -> list[ProcessStat]:
    """The longest-running process called `name`, with its descendants: a server's main process and
    its children, not the short-lived namesakes its command-line tools start (rabbitmqctl runs a
    `beam.smp` of its own)."""
    named = [stat for stat in table.values() if stat.name == name]
    return with_descendants([min(named, key=lambda stat: stat.started).pid], table) if named else []


def service(pid: int) -> Selector:
    """A service process and its children (uvicorn --workers, a prefork pool)."""
    return lambda table: with_descendants([pid], table)


def single(pid: int) -> Selector:
    """One process alone (the load generator, whose children are the services)."""
    return lambda table: [table[pid]] if pid in table else []


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    machine_busy_ticks: int  # every CPU's non-idle time, all processes (/proc/stat)
    groups: dict[str, dict[tuple[int, int], ProcessStat]]


def machine_busy_ticks(proc: Path = PROC) -> int:
    """user + nice + system + irq + softirq + steal of all CPUs (guest time is inside user)."""
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return user + nice + system + irq + softirq + steal


def sample(groups: Mapping[str, Selector], proc: Path = PROC) -> Sample:
    table = process_table(proc)
    return Sample(
        at=time.monotonic(),
        machine_busy_ticks=machine_busy_ticks(proc),
        groups={name: {stat.key: stat for stat in select(table)} for name, select in groups.items()},
    )


@dataclass(frozen=True)
class GroupCpu:
    seconds: float
    processes: int  # running at the end
    exited: int  # ran at the start, gone at the end: their CPU in the window is not counted


def cpu_between(start: Sample, end: Sample) -> dict[str, GroupCpu]:
    """CPU seconds each group used between two samples."""
    result = {}
    for name, processes in end.groups.items():
        before = start.groups.get(name, {})
        ticks = sum(
            stat.cpu_ticks - (before[key].cpu_ticks if key in before else 0)
            for key, stat in processes.items()
        )
        result[name] = GroupCpu(
            seconds=ticks / TICKS_PER_SECOND,
            processes=len(processes),
            exited=len(before.keys() - processes.keys()),
        )
    return result


def peak_rss_mib(pid: int, proc: Path = PROC) -> float | None:
    """The process's peak resident memory so far (VmHWM); None once it has gone."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None
