"""The CPU cost of creating a fan-out's notifications, per notification: the Python process's and its
PostgreSQL backend's, with nothing else of Pulse running (no broker, no scheduler, no workers).

A fresh database (migrated as the tests' are) gets a tenant, N recipient profiles with an email address,
and their subscriptions to one topic. Each run starts a fan-out of an email send to that topic
(`start_fanout`) and runs its chunks as the scheduler's fan-out runner does (`run_fanout_chunk`,
one transaction each) until it is done; it reports `time.process_time()` and the backend's
utime + stime (/proc/<pg_backend_pid>/stat: PostgreSQL must run on this machine) over the loop,
divided by the notifications created. Between runs (not measured) the notifications, outbox rows and
rate-limit counters of the previous run are deleted, so that every run inserts the same rows into the
same tables; the deployment's default rate limits apply, and quiet hours that never cover the run
(so that every notification is due now, at any time of day, while their planning is still paid).

    PYTHONPATH=shared .venv/bin/python -m bench.fanout_chunk [--subscribers 20000] [--chunk-size 1000]
        [--runs 5] [--single 2000]

PYTHONPATH picks the library measured (the venv's editable install points at one checkout's).
`--single N` then measures N single sends per run as well (`accept_notification`, the gateway's path
without HTTP, a transaction each). The database is dropped at the end (`--keep` leaves it).
"""

import argparse
import gc
import os
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Engine, make_url

from devtools.stack import SERVER_DATABASE_URL
from pulse.admin.cli import ensure_database
from pulse.db import make_session_factory, transaction
from pulse.db.migrate import upgrade_to_head
from pulse.db.models import Recipient, TopicSubscription
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant
from pulse.topics.fanout import run_fanout_chunk
from pulse.topics.service import start_fanout

TOPIC = "bench"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(pid: int) -> float:
    """utime + stime of a local process."""
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def populate(engine: Engine, subscribers: int) -> uuid.UUID:
    """A tenant with `subscribers` profiles subscribed to TOPIC; returns the tenant's id."""
    with transaction(make_session_factory(engine)) as session:
        tenant_id = create_tenant(session, name=f"bench-{secrets.token_hex(4)}").id
    users = [f"user-{index:07}" for index in range(subscribers)]
    with engine.begin() as connection:
        connection.execute(
            insert(Recipient),
            [{"tenant_id": tenant_id, "user_id": user, "email": f"{user}@example.com"} for user in users],
        )
        connection.execute(
            insert(TopicSubscription),
            [{"tenant_id": tenant_id, "topic": TOPIC, "user_id": user} for user in users],
        )
        connection.execute(text("ANALYZE"))
    return tenant_id


def one_run(
    engine: Engine, tenant_id: uuid.UUID, *, rules: AcceptanceSettings, chunk_size: int
) -> dict[str, float]:
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        request = NotificationRequest.model_validate(
            {"channel": "email", "topic": TOPIC, "content": {"subject": "Bench", "body": "Hello."}}
        )
        start_fanout(session, tenant_id=tenant_id, request=request)
        backend = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)
    created = 0
    wall, python, pg = time.perf_counter(), time.process_time(), backend_cpu_seconds(backend)
    while True:
        with transaction(factory) as session:
            accepted = run_fanout_chunk(
                session, rules=rules, chunk_size=chunk_size, publish_grace=timedelta(seconds=5)
            )
            assert session.scalar(text("SELECT pg_backend_pid()")) == backend, "one connection throughout"
        if not accepted:  # None: no fan-out waiting; []: the last call marked it done.
            break
        created += len(accepted)
    wall, python, pg = (
        time.perf_counter() - wall,
        time.process_time() - python,
        backend_cpu_seconds(backend) - pg,
    )
    return {
        "created": created,
        "wall_s": wall,
        "python_ms": python * 1000 / created,
        "pg_ms": pg * 1000 / created,
    }


def single_sends(
    engine: Engine, tenant_id: uuid.UUID, *, rules: AcceptanceSettings, sends: int
) -> dict[str, float]:
    """The gateway's path for comparison: `accept_notification` of one send naming a user (profile
    looked up, rate-limited), a transaction each, to `sends` different users."""
    factory = make_session_factory(engine)
    with factory() as session:
        backend = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)
    policy, limits = rules.policy_of(_UTC_TENANT), rules.limits_of(_UTC_TENANT)
    requests = [
        NotificationRequest.model_validate(
            {
                "channel": "email",
                "user_id": f"user-{index:07}",
                "content": {"subject": "Hi", "body": "Hello."},
            }
        )
        for index in range(sends)
    ]
    wall, python, pg = time.perf_counter(), time.process_time(), backend_cpu_seconds(backend)
    for request in requests:
        with transaction(factory) as session:
            accept_notification(session, tenant_id=tenant_id, request=request, policy=policy, rate=limits)
    return {
        "wall_ms": (time.perf_counter() - wall) * 1000 / sends,
        "python_ms": (time.process_time() - python) * 1000 / sends,
        "pg_ms": (backend_cpu_seconds(backend) - pg) * 1000 / sends,
    }


class _Tenant:
    """The stored settings of a tenant that has none of its own."""

    timezone = "UTC"
    quiet_hours = default_priority = None
    rate_limit = rate_limit_window_seconds = sends_per_minute = None


_UTC_TENANT = _Tenant()


def reset(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("TRUNCATE notifications, outbox, rate_limit_counters, fanouts CASCADE"))
        connection.execute(text("VACUUM ANALYZE notifications, outbox, rate_limit_counters"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--single", type=int, default=0, help="then as many single sends (accept_notification), per run"
    )
    parser.add_argument("--keep", action="store_true", help="leave the database (its URL is printed)")
    args = parser.parse_args()

    name = f"pulse_bench_fanout_{os.getpid()}_{secrets.token_hex(3)}"
    url = make_url(SERVER_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    ensure_database(url)
    # One connection, so that one backend does (and is measured for) all the work.
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        upgrade_to_head(url)
        tenant_id = populate(engine, args.subscribers)
        later = datetime.now(UTC) + timedelta(hours=6)
        rules = AcceptanceSettings(quiet_hours=f"{later:%H}:00-{(later + timedelta(hours=1)):%H}:00")
        gc.freeze()  # As the fan-out runner does before its loop (services/scheduler/fanouts.py).
        results = []
        for run in range(args.runs):
            reset(engine)
            result = one_run(engine, tenant_id, rules=rules, chunk_size=args.chunk_size)
            assert result["created"] == args.subscribers, result
            results.append(result)
            print(
                f"run {run + 1}: {result['created']} created in {result['wall_s']:.2f} s; per notification "
                f"python {result['python_ms']:.3f} ms, postgres {result['pg_ms']:.3f} ms",
                flush=True,
            )
        singles = []
        for run in range(args.runs if args.single else 0):
            reset(engine)
            single = single_sends(engine, tenant_id, rules=rules, sends=args.single)
            singles.append(single)
            print(
                f"single sends, run {run + 1}: per send python {single['python_ms']:.3f} ms, "
                f"postgres {single['pg_ms']:.3f} ms, wall {single['wall_ms']:.3f} ms",
                flush=True,
            )
        if singles:
            print(
                f"single sends, median of {args.runs}: python "
                f"{statistics.median(r['python_ms'] for r in singles):.3f} ms, postgres "
                f"{statistics.median(r['pg_ms'] for r in singles):.3f} ms per send"
            )
        print(
            f"median of {args.runs}: python {statistics.median(r['python_ms'] for r in results):.3f} ms, "
            f"postgres {statistics.median(r['pg_ms'] for r in results):.3f} ms, "
            f"wall {statistics.median(r['wall_s'] for r in results) * 1000 / args.subscribers:.3f} ms "
            "per notification"
        )
    finally:
        engine.dispose()
        if args.keep:
            print(url)
        else:
            server = create_engine(SERVER_DATABASE_URL, isolation_level="AUTOCOMMIT")
            with server.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()


if __name__ == "__main__":
    main()
