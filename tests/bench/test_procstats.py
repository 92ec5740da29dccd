"""The /proc accounting `make bench` reports per process: parsing, process trees, and CPU between samples."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bench import procstats
from bench.procstats import CpuTracker, ProcessStat

# proc(5) fields 3.. after the name: state, ppid, 9 fields, utime, stime, cutime, cstime, 4 fields,
# starttime, and the rest.
STAT_TAIL = "S 1 1 1 0 -1 4194560 100 0 0 0 {utime} {stime} 999 999 20 0 1 0 {started} 1000 100 0\n"


def fake_proc(tmp_path: Path, pid: int, name: str, *, utime: int, stime: int, started: int) -> Path:
    (tmp_path / str(pid)).mkdir()
    tail = STAT_TAIL.format(utime=utime, stime=stime, started=started)
    (tmp_path / str(pid) / "stat").write_text(f"{pid} ({name}) {tail}")
    return tmp_path


def test_a_stat_line_is_read_whatever_the_process_name_holds(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 42, "a (weird) name)", utime=250, stime=50, started=777)

    stat = procstats.read_stat(42, proc)

    # utime + stime only: the waited-for children's 999 + 999 are not this process's.
    assert stat == ProcessStat(pid=42, ppid=1, name="a (weird) name)", started=777, cpu_ticks=300)
    assert procstats.read_stat(43, proc) is None


def test_this_process_is_read_as_the_kernel_sees_it() -> None:
    stat = procstats.read_stat(os.getpid())

    assert stat is not None
    assert stat.ppid == os.getppid()
    assert stat.cpu_ticks > 0
    assert (procstats.peak_rss_mib(os.getpid()) or 0) > 1


def snapshot(*processes: ProcessStat) -> dict[int, ProcessStat]:
    """A process table, as process_table() reads it from /proc."""
    return {process.pid: process for process in processes}


def stat(pid: int, ppid: int, *, ticks: int = 0, started: int = 1, name: str = "python") -> ProcessStat:
    return ProcessStat(pid=pid, ppid=ppid, name=name, started=started, cpu_ticks=ticks)


def test_a_service_is_its_process_and_every_descendant() -> None:
    table = snapshot(stat(10, 1), stat(11, 10), stat(12, 11), stat(13, 1), stat(14, 13))

    assert sorted(s.pid for s in procstats.service(10)(table)) == [10, 11, 12]
    assert [s.pid for s in procstats.single(10)(table)] == [10]
    assert procstats.service(99)(table) == []


def test_a_server_is_its_oldest_process_of_that_name_not_a_namesake_tool() -> None:
    server, worker = stat(20, 1, name="beam.smp", started=5), stat(21, 20, name="erl_child_setup")
    tool = stat(30, 1, name="beam.smp", started=9000)  # rabbitmqctl's own VM
    table = snapshot(server, worker, tool)

    assert procstats.oldest_tree("beam.smp", table) == [server, worker]
    assert procstats.oldest_tree("postgres", table) == []


def test_a_window_counts_what_each_process_used_in_it_up_to_its_last_observation() -> None:
    tracker = CpuTracker({"api": lambda table: list(table.values())})

    tracker.observe(
        snapshot(stat(1, 0, ticks=500), stat(2, 1, ticks=100), stat(3, 1, ticks=70), stat(4, 1, ticks=9))
    )
    tracker.observe(snapshot(stat(1, 0, ticks=600), stat(3, 1, ticks=90), stat(4, 1, ticks=12)))
    tracker.observe(
        snapshot(
            stat(1, 0, ticks=800),  # +300
            stat(4, 1, ticks=30, started=2),  # pid 4 reused by a new process: all of its 30
            stat(5, 1, ticks=20),  # new: all of its 20
        )
    )  # 2 exited right after the start (+0), 3 after its second look (+20), the first 4 too (+3)

    usage = tracker.usage()["api"]

    assert round(usage.seconds * procstats.TICKS_PER_SECOND) == 300 + 30 + 20 + 0 + 20 + 3
    assert (usage.processes, usage.exited) == (3, 3)


BURN = textwrap.dedent(
    """
    import sys, time
    while time.process_time() < 0.5:
        pass
    print("burned", flush=True)
    sys.stdin.read()
    """
)


def test_the_cpu_a_grandchild_burns_is_counted_for_its_service() -> None:
    # A service whose work happens in a child of a child (a pool under a supervisor).
    supervisor = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}])"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with CpuTracker({"service": procstats.service(supervisor.pid)}, interval=0.1) as tracker:
            assert supervisor.stdout is not None
            assert supervisor.stdout.readline() == "burned\n"
    finally:
        supervisor.communicate("")

    usage = tracker.usage()["service"]
    assert usage.processes == 2
    # 0.5 s of burning, plus at most the two interpreters' start-up.
    assert 0.45 <= usage.seconds <= 1.5
    assert tracker.machine_busy_seconds >= 0.45
