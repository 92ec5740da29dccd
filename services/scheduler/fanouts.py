"""The scheduler's fan-out runners: processes of their own that create the notifications of topic
sends, chunk after chunk, and hand each chunk's publishes to the scheduler's after-commit publisher.
Several (PULSE_SCHEDULER_FANOUT_RUNNERS): the parts of one fan-out are created side by side.

Processes rather than threads of the scheduler: creating a notification and publishing it cost
about the same Python CPU (~0.1 ms each), and in one process they took turns on one interpreter
lock; on a machine busy delivering, the scheduler got a quarter to a third of a core for both
(100,000 notifications created in 75-109 s; 35 s with nothing published meanwhile). And not one
more job of the loop: a job gets one transaction per tick (0.5 s), which would hold a
100,000-subscriber fan-out to 1000 notifications per tick.

Creating does not wait for publishing: the notifications are committed with their outbox rows, and
what the publisher does not take (it holds a bounded number, then leaves the rest to the outbox
sweep; a runner that dies hands over nothing more) is published by the sweep; memory stays bounded
either way. A runner process stops with the scheduler, and by itself when the scheduler died
(after its chunk: committed or not, the next runner resumes where the last commit left off).
"""

import gc
import logging
import multiprocessing
import os
import signal
import threading
import uuid
from datetime import timedelta
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from pulse.db import make_engine, make_session_factory, transaction
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.observability.logging import configure_logging
from pulse.outbox.service import AfterCommitPublisher
from pulse.topics.fanout import finish_fanouts, run_fanout_chunk
from services.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

# One chunk's publishes, as the runner hands them over: (outbox id, notification id, channel, priority).
_Publishes = list[tuple[int, uuid.UUID, str, str]]


class FanoutRunner:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        hand_over: Connection,
        *,
        rules: AcceptanceSettings,
        chunk_size: int,
        publish_grace: timedelta,
        idle_seconds: float,
    ) -> None:
        self._session_factory = session_factory
        self._hand_over = hand_over
        self._rules = rules
        self._chunk_size = chunk_size
        self._publish_grace = publish_grace
        self._idle_seconds = idle_seconds
        self._stopping = threading.Event()

    def run_once(self) -> bool:
        """One chunk of one running fan-out, committed, then handed over for publishing; False when
        none was waiting."""
        with transaction(self._session_factory) as session:
            accepted = run_fanout_chunk(
                session, rules=self._rules, chunk_size=self._chunk_size, publish_grace=self._publish_grace
            )
        if accepted is None:
            return False
        if not accepted:  # A part may have ended: its fan-out may be done.
            with transaction(self._session_factory) as session:
                finish_fanouts(session)
        owed = [
            (item.outbox_id, item.notification.id, item.notification.channel, item.notification.priority)
            for item in accepted
            if item.outbox_id is not None
        ]
        if owed:
            self._hand_over.send(owed)
        return True

    def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("a fan-out chunk failed; trying again shortly")
                busy = False
            if not busy:
                self._stopping.wait(self._idle_seconds)

    def stop(self) -> None:
        self._stopping.set()

    def stopped(self, *, timeout: float) -> bool:
        """True once stopped; waits up to `timeout` for it."""
        return self._stopping.wait(timeout)


class _Owed(NamedTuple):
    """A handed-over notification, as the after-commit publisher reads one."""

    id: uuid.UUID
    channel: str
    priority: str


class FanoutProcesses:
    """The runners, each in a child process, started again if it dies; a thread of the scheduler per
    runner takes the publishes it hands over to the after-commit publisher."""

    def __init__(self, settings: SchedulerSettings, publisher: AfterCommitPublisher) -> None:
        self._settings = settings
        self._publisher = publisher
        # Spawned, not forked: the scheduler has threads (and their locks) by now.
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False
        self._processes: list[SpawnProcess | None] = [None] * settings.fanout_runners
        self._takers: list[threading.Thread] = []

    def keep_running(self) -> None:
        """Start the runners, and again those that died (they resume where the last committed chunk
        of each part left off)."""
        for slot, process in enumerate(self._processes):
            if self._stopping or (process is not None and process.is_alive()):
                continue
            if process is not None:
                log.warning("fan-out runner %d exited (code %s); starting it again", slot, process.exitcode)
            self._processes[slot] = self._start_runner(slot)

    def stop(self) -> None:
        """Stop the runners after their chunk. By a signal, not a shared lock or event: one that a
        process killed while holding or waiting on it leaves blocked for the others."""
        self._stopping = True
        running = [process for process in self._processes if process is not None]
        for process in running:
            process.terminate()
        for process in running:
            process.join(timeout=10)
        for taker in self._takers:
            taker.join(timeout=10)

    def _start_runner(self, slot: int) -> SpawnProcess:
        # A pipe of each runner's own, whose writing end only the runner holds: when the runner ends
        # (even killed in the middle of a message), reading it ends too.
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_run_runner,
            args=(self._settings, writer, os.getpid()),
            name=f"pulse-fanouts-{slot}",
            daemon=True,
        )
        process.start()
        writer.close()
        taker = threading.Thread(
            target=self._take_publishes, args=(reader,), name=f"fanout-publishes-{slot}", daemon=True
        )
        taker.start()
        self._takers = [thread for thread in self._takers if thread.is_alive()] + [taker]
        return process

    def _take_publishes(self, reader: Connection) -> None:
        with reader:
            while True:
                try:
                    owed: _Publishes = reader.recv()
                except (EOFError, OSError):  # The runner ended (OSError: in the middle of a message).
                    return
                self._publisher.publish(
                    [(outbox_id, _Owed(id, channel, priority)) for outbox_id, id, channel, priority in owed]
                )


def _run_runner(settings: SchedulerSettings, hand_over: Connection, scheduler: int) -> None:
    """The child process: run fan-outs until the scheduler stops it (SIGTERM) or is gone."""
    configure_logging("scheduler")
    runner = FanoutRunner(
        make_session_factory(make_engine(settings.database)),
        hand_over,
        rules=settings.acceptance,
        chunk_size=settings.fanout_chunk_size,
        publish_grace=timedelta(seconds=settings.fanout_publish_grace_seconds),
        idle_seconds=settings.tick_seconds,
    )
    # After the chunk under way: it commits, or rolls back as a whole.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: runner.stop())

    def stop_with_the_scheduler() -> None:
        while not runner.stopped(timeout=1.0) and os.getppid() == scheduler:
            pass
        runner.stop()

    threading.Thread(target=stop_with_the_scheduler, name="watch-scheduler", daemon=True).start()
    gc.freeze()  # As the scheduler does (services/scheduler/__main__.py).
    runner.run_forever()
