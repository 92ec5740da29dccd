"""The scheduler's fan-out runners, processes of their own (services/scheduler/fanouts.py), under
kill -9: a runner killed in the middle of a fan-out is started again and resumes; a scheduler killed
takes its runners with it, and the next scheduler resumes. Each subscriber gets one notification
either way."""

import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from devtools.stack import Infrastructure, Stack, running_stack, wait_until
from pulse.db import transaction
from pulse.db.models import Fanout, Notification, Recipient
from pulse.notifications.schemas import NotificationRequest
from pulse.tenants.service import create_tenant
from pulse.topics.service import start_fanout, subscribe

SUBSCRIBERS = 3000
# Small chunks: the fan-out lasts long enough to be killed in the middle of.
CHUNK_SIZE = 50
RUNNERS = 2


@pytest.fixture
def scheduler(private: Infrastructure, tmp_path: Path) -> Iterator[Stack]:
    """The scheduler alone; once it stopped (SIGTERM), none of its runners is left."""
    settings = {
        "PULSE_SCHEDULER_FANOUT_CHUNK_SIZE": str(CHUNK_SIZE),
        "PULSE_SCHEDULER_FANOUT_RUNNERS": str(RUNNERS),
    }
    with running_stack(private, tmp_path, settings, services=("scheduler",)) as stack:
        yield stack
    wait_until(lambda: not _runners_on(private), timeout=30, what="every runner to exit with its scheduler")


@pytest.fixture
def fanout_id(factory: sessionmaker[Session]) -> uuid.UUID:
    """A topic send to SUBSCRIBERS users with an email profile each, of a tenant of its own."""
    users = [f"runner-{index:05}" for index in range(SUBSCRIBERS)]
    with transaction(factory) as session:
        tenant_id = create_tenant(session, name=f"runner-{uuid.uuid4().hex[:8]}").id
        for start in range(0, SUBSCRIBERS, 1000):
            subscribe(session, tenant_id=tenant_id, topic="news", user_ids=users[start : start + 1000])
        session.execute(
            insert(Recipient),
            [{"tenant_id": tenant_id, "user_id": u, "email": f"{u}@example.com"} for u in users],
        )
        request = NotificationRequest.model_validate(
            {"channel": "email", "topic": "news", "content": {"subject": "News", "body": "Hello"}}
        )
        return start_fanout(session, tenant_id=tenant_id, request=request).id


def _fanout(factory: sessionmaker[Session], fanout_id: uuid.UUID) -> Fanout:
    with factory() as session:
        return session.get_one(Fanout, fanout_id, options=[selectinload(Fanout.parts)])


def _under_way(factory: sessionmaker[Session], fanout_id: uuid.UUID) -> bool:
    fanout = _fanout(factory, fanout_id)
    assert fanout.status == "running", "the fan-out finished before it could be interrupted"
    return fanout.created > 0


def _runners_of(scheduler_pid: int) -> set[int]:
    """The scheduler's fan-out runners: its children started by multiprocessing's spawn, alive."""
    runners = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent == scheduler_pid and b"spawn_main" in command and _alive(int(entry.name)):
            runners.add(int(entry.name))
    return runners


def _all_runners(scheduler: Stack) -> set[int] | None:
    """The scheduler's runners, once as many run as it starts."""
    runners = _runners_of(scheduler.pids["scheduler"])
    return runners if len(runners) == RUNNERS else None


def _runners_on(infrastructure: Infrastructure) -> list[int]:
    """Fan-out runners alive with this database in their environment."""
    database = f"PULSE_DATABASE_URL={infrastructure.database_url}".encode()
    runners = []
    for entry in Path("/proc").iterdir():
        try:
            found = b"spawn_main" in (entry / "cmdline").read_bytes()
            found = found and database in (entry / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
            continue
        if found and _alive(int(entry.name)):
            runners.append(int(entry.name))
    return runners


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _each_subscriber_once(factory: sessionmaker[Session], fanout_id: uuid.UUID) -> None:
    fanout = wait_until(
        lambda: (fanout := _fanout(factory, fanout_id)).status == "done" and fanout,
        timeout=120,
        what="the fan-out to finish",
    )
    assert (fanout.created, fanout.skipped) == (SUBSCRIBERS, 0)
    with factory() as session:
        users = Counter(
            session.scalars(select(Notification.user_id).where(Notification.fanout_id == fanout_id))
        )
    assert len(users) == SUBSCRIBERS and set(users.values()) == {1}


def test_killed_runners_are_started_again_and_the_fanout_resumes(
    scheduler: Stack, factory: sessionmaker[Session], fanout_id: uuid.UUID
) -> None:
    runners = wait_until(lambda: _all_runners(scheduler), timeout=30, what="the runners")
    wait_until(lambda: _under_way(factory, fanout_id), timeout=60, what="the fan-out's first chunk")

    killed = min(runners)
    os.kill(killed, signal.SIGKILL)

    _each_subscriber_once(factory, fanout_id)
    restarted = wait_until(
        lambda: _all_runners(scheduler), timeout=30, what="a runner in the killed one's place"
    )
    assert killed not in restarted and runners - {killed} < restarted


def test_a_killed_scheduler_takes_its_runner_with_it_and_the_next_one_resumes(
    scheduler: Stack, factory: sessionmaker[Session], fanout_id: uuid.UUID
) -> None:
    runners = wait_until(lambda: _all_runners(scheduler), timeout=30, what="the runners")
    wait_until(lambda: _under_way(factory, fanout_id), timeout=60, what="the fan-out's first chunk")

    scheduler.kill("scheduler")

    wait_until(lambda: not any(map(_alive, runners)), timeout=30, what="the orphaned runners to exit")
    scheduler.start("scheduler")
    _each_subscriber_once(factory, fanout_id)
