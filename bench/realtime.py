"""make bench-realtime: many WebSocket connections on one realtime process, and a burst of in-app sends.

A private Pulse (fresh database and vhost; gateway, inapp worker, one realtime process, scheduler), then:
1. `--connections` WebSockets to the realtime process, from `--client-processes` asyncio processes
   (`websockets`, compression offered as browsers do, no client pings), `--per-user` per user (the
   default limit, PULSE_REALTIME_MAX_CONNECTIONS_PER_USER, 5), at most `--connect-concurrency` handshakes
   at a time: the registry takes a PostgreSQL transaction per connect. The clients read continuously
   and send nothing.
   Measured: connects/s, handshake → `missed_notifications` p50/p99, the realtime process's resident
   memory before and after, divided by the connections, and the CPU each process used.
2. A burst of `--burst` in-app sends through the gateway (one user each, users in turn, so every
   connection of those users receives it), from `--send-clients` keep-alive clients.
   Measured: accepted → received by the client p50/p95/p99 over every copy received (accepted is the
   notification's `created_at`, its accepting transaction, PostgreSQL's clock; received the client's
   clock when the message was read: the same machine's clock), split at `delivered_at` (stored in the
   inbox by the inapp worker); and the CPU each process used per notification.
Saved in bench/results/realtime-latest.json (and one file per run).

    make bench-realtime                                         # 10,000 connections, a burst of 1,000
    python -m bench.realtime --connections 500 --burst 100      # a quick look
"""

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import resource
import secrets
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench import procstats
from bench.email_throughput import cpu_report, observed, progress, save
from bench.ledger import Ledger, Tenant
from bench.load import SINGLE_PATH, send
from bench.report import Scenario, print_cpu_table
from devtools.stack import Stack, Timeout, isolated_infrastructure, running_stack, wait_until
from pulse.inapp.tokens import EndUser, issue_token

SERVICES = ("api", "inapp_worker", "realtime", "scheduler")
CLIENTS = "websocket clients"
# Each process holds its sockets and, beside them, its log files, database pool, broker connections.
SPARE_FILES = 1000
TOKEN_TTL_SECONDS = 3 * 3600


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=10_000, help="WebSockets held open at once")
    parser.add_argument("--burst", type=int, default=1000, help="in-app sends once every socket is open")
    parser.add_argument(
        "--per-user", type=int, default=5, help="connections per user (at most the per-user limit, 5)"
    )
    parser.add_argument("--client-processes", type=int, default=2, help="processes holding the sockets")
    parser.add_argument("--connect-concurrency", type=int, default=32, help="handshakes under way at once")
    parser.add_argument("--send-clients", type=int, default=16, help="keep-alive clients sending the burst")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="PULSE_REALTIME_COMPRESSION=true: the realtime process accepts permessage-deflate",
    )
    parser.add_argument(
        "--results-name", default="realtime", help="saved as bench/results/<name>-latest.json"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    started = time.monotonic()
    files = raise_open_files_limit(args.connections + SPARE_FILES)
    log_dir = Path(tempfile.mkdtemp(prefix="pulse-bench-realtime-"))
    progress(f"logs: {log_dir}; open files limit {files}")
    secret = secrets.token_urlsafe(32)
    service_env = {
        "PULSE_JWT_SECRET": secret,
        # The clients send nothing (no pings) while the other sockets connect, which takes minutes.
        "PULSE_REALTIME_IDLE_TIMEOUT_SECONDS": "3600",
        "PULSE_REALTIME_MAX_CONNECTIONS_PER_USER": str(max(5, args.per_user)),
        "PULSE_REALTIME_COMPRESSION": str(args.compression).lower(),
    }
    with (
        isolated_infrastructure("pulse_bench") as infrastructure,
        running_stack(infrastructure, log_dir, service_env, services=SERVICES) as stack,
    ):
        progress(f"Pulse started: {', '.join(SERVICES)}")
        ledger = Ledger(infrastructure)
        try:
            results = RealtimeBench(stack, ledger, args, secret).run()
        finally:
            ledger.close()
    progress("Pulse stopped; its database and vhost dropped")
    results.update(
        settings={**vars(args), **service_env, "PULSE_JWT_SECRET": "(random)"},
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
        f"Python {platform.python_version()}",
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_seconds=round(time.monotonic() - started),
    )
    save(results, args.results_name)


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft limit of open files towards `needed` (the services and the client
    processes inherit it); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft < needed:
        raise SystemExit(f"open files: the limit is {soft}, {needed} needed (raise `ulimit -Hn`)")
    return soft


def user_ids(connections: int, per_user: int) -> list[str]:
    return [f"user-{index:06}" for index in range(math.ceil(connections / per_user))]


def inapp_bodies(count: int, users: Sequence[str]) -> list[bytes]:
    """One in-app send per user in turn (a user is sent to again only after every other one)."""
    return [
        json.dumps(
            {
                "channel": "inapp",
                "recipient": users[index % len(users)],
                "content": {"subject": f"Bench {index}", "body": "Hello from the realtime benchmark."},
            }
        ).encode()
        for index in range(count)
    ]


def expected_copies(burst: int, connected: Counter[int], users: int) -> int:
    """How many notifications the clients should receive: each send, once per open socket of its user
    (`connected`: open sockets by user index)."""
    return sum(connected[index % users] for index in range(burst))


def percentiles_ms(seconds: Iterable[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of durations in seconds, in milliseconds (None: nothing to measure)."""
    values = sorted(seconds)
    if not values:
        return dict.fromkeys(("p50", "p95", "p99", "max"))
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {
        "p50": round(cuts[49] * 1000, 1),
        "p95": round(cuts[94] * 1000, 1),
        "p99": round(cuts[98] * 1000, 1),
        "max": round(values[-1] * 1000, 1),
    }


class RealtimeBench:
    def __init__(self, stack: Stack, ledger: Ledger, args: argparse.Namespace, secret: str) -> None:
        self.stack, self.ledger, self.args, self.secret = stack, ledger, args, secret
        self.realtime_pid = stack.pids["realtime"]
        self.groups = observed(stack, ledger)

    def rss_mib(self) -> float:
        return round(procstats.rss_mib(self.realtime_pid) or 0.0, 1)

    def run(self) -> dict[str, Any]:
        args = self.args
        tenant = self.ledger.tenant("realtime")
        users = user_ids(args.connections, args.per_user)
        tokens = [issue_token(self.secret, EndUser(tenant.id, user), TOKEN_TTL_SECONDS)[0] for user in users]
        url = self.stack.realtime_url().replace("http", "ws", 1) + "/v1/ws?token="
        clients = [
            ClientProcess(
                url,
                [
                    (index % len(users), tokens[index % len(users)])
                    for index in range(first, args.connections, args.client_processes)
                ],
                concurrency=max(1, args.connect_concurrency // args.client_processes),
            )
            for first in range(args.client_processes)
        ]
        client_pids = [client.pid for client in clients]
        self.groups[CLIENTS] = lambda table: [table[pid] for pid in client_pids if pid in table]
        try:
            return self._measure(tenant, users, clients)
        finally:
            for client in clients:
                client.stop()

    def _measure(self, tenant: Tenant, users: list[str], clients: list["ClientProcess"]) -> dict[str, Any]:
        args = self.args
        rss_before = self.rss_mib()
        load = {"before": os.getloadavg()[0]}
        progress(f"realtime process {rss_before} MiB; connecting {args.connections} sockets")
        with procstats.CpuTracker(self.groups) as connect_cpu:
            started = time.perf_counter()
            for client in clients:
                client.connect()
            opened = [client.connected() for client in clients]
            connect_seconds = time.perf_counter() - started
        connected: Counter[int] = Counter()
        for report in opened:
            connected.update(report["connected"])
        handshakes = [seconds for report in opened for seconds in report["handshake_seconds"]]
        failures = [failure for report in opened for failure in report["failures"]]
        held = sum(connected.values())
        rss_connected = self.rss_mib()
        clients_rss = sum(procstats.rss_mib(client.pid) or 0.0 for client in clients)
        load["connected"] = os.getloadavg()[0]
        connect = Scenario(
            name="connect",
            sent=args.connections,
            clients=args.connect_concurrency,
            accepted_per_second=round(held / connect_seconds, 1),
            delivered=held,
            failed=len(failures),
            delivered_per_second=round(held / connect_seconds, 1),
            latency_ms=percentiles_ms(handshakes),
            cpu=cpu_report(connect_cpu, max(held, 1)),
            details={"seconds": round(connect_seconds, 1)},
        )
        memory = {
            "realtime_rss_before_mib": rss_before,
            "realtime_rss_connected_mib": rss_connected,
            "realtime_kib_per_connection": round((rss_connected - rss_before) * 1024 / max(held, 1), 1),
            "clients_rss_mib": round(clients_rss, 1),
        }
        progress(
            f"{held} connected ({len(failures)} failed) in {connect_seconds:.1f} s; realtime process "
            f"{rss_before} → {rss_connected} MiB: {memory['realtime_kib_per_connection']} KiB per connection"
        )

        expected = expected_copies(args.burst, connected, len(users))
        with procstats.CpuTracker(self.groups) as burst_cpu:
            sent = send(
                self.stack.ports["api"],
                tenant.api_key,
                SINGLE_PATH,
                inapp_bodies(args.burst, users),
                clients=args.send_clients,
            )
            self.ledger.wait_finished(tenant, timeout=120 + args.burst / 10)
            arrived = wait_received(clients, expected)
        load["burst"] = os.getloadavg()[0]
        finished = [client.finish() for client in clients]
        receipts = [receipt for report in finished for receipt in report["receipts"]]
        closed = sum((Counter(report["closed"]) for report in finished), Counter[str]())
        memory["realtime_rss_after_burst_mib"] = self.rss_mib()
        memory["realtime_peak_rss_mib"] = round(procstats.peak_rss_mib(self.realtime_pid) or 0.0, 1)

        times = self._notification_times(tenant.id)
        outcome = self.ledger.outcome(tenant)
        burst = Scenario.of(
            "burst", outcome, sent=args.burst, clients=args.send_clients, send_seconds=sent.seconds
        )
        burst.cpu = cpu_report(burst_cpu, max(outcome.delivered, 1))
        received = {
            "copies_expected": expected,
            "copies_received": len(receipts),
            "all_arrived": arrived,
            "accepted_to_received_ms": percentiles_ms(
                at - times[id][0] for id, at in receipts if id in times
            ),
            "stored_to_received_ms": percentiles_ms(at - times[id][1] for id, at in receipts if id in times),
        }
        results = {
            "connections": args.connections,
            "users": len(users),
            "connect": asdict(connect),
            "connect_failures": failures[:10],
            "memory": memory,
            "burst": asdict(burst),
            "received": received,
            "closed_during_run": dict(closed),
            "load_average_1min": load,
        }
        print_summary(results, {"connect": connect, "burst": burst})
        return results

    def _notification_times(self, tenant_id: uuid.UUID) -> dict[str, tuple[float, float]]:
        """Accepted (`created_at`) and stored in the inbox (`delivered_at`) of each notification, as Unix
        times."""
        with self.ledger.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id::text, extract(epoch FROM created_at), extract(epoch FROM delivered_at)"
                    " FROM notifications WHERE tenant_id = :tenant AND delivered_at IS NOT NULL"
                ),
                {"tenant": tenant_id},
            )
            return {row[0]: (float(row[1]), float(row[2])) for row in rows}


def wait_received(clients: list["ClientProcess"], expected: int) -> bool:
    """Until the clients have received `expected` copies (at most a minute after the last was stored):
    whether they all arrived."""
    try:
        wait_until(
            lambda: sum(client.received() for client in clients) >= expected,
            timeout=60,
            interval=0.2,
            what=f"{expected} notifications received",
        )
    except Timeout as error:
        progress(str(error))
        return False
    return True


def print_summary(results: dict[str, Any], scenarios: dict[str, Scenario]) -> None:
    connect, memory, received = scenarios["connect"], results["memory"], results["received"]
    rule = "═" * 100
    latency = received["accepted_to_received_ms"]
    print(f"\n{rule}")
    print(
        f"  {connect.delivered} WebSockets on one realtime process: "
        f"{memory['realtime_kib_per_connection']} KiB per connection "
        f"({memory['realtime_rss_before_mib']} → {memory['realtime_rss_connected_mib']} MiB)"
    )
    print(
        f"  burst of {results['burst']['sent']} in-app sends: accepted → received p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms ({received['copies_received']} of {received['copies_expected']} copies)"
    )
    print(rule)
    handshake = connect.latency_ms
    print(
        f"  connect: {connect.delivered} in {connect.details['seconds']} s ({connect.delivered_per_second}/s,"
        f" {connect.failed} failed), handshake → missed_notifications p50 {handshake['p50']} ms,"
        f" p99 {handshake['p99']} ms"
    )
    stored = scenarios["burst"].latency_ms
    to_client = received["stored_to_received_ms"]
    print(
        f"  burst: accepted {scenarios['burst'].accepted_per_second}/s; accepted → stored in the inbox p50"
        f" {stored['p50']} ms, p99 {stored['p99']} ms; stored → received p50 {to_client['p50']} ms,"
        f" p99 {to_client['p99']} ms; max accepted → received {latency['max']} ms"
    )
    print(f"  closed during the run (client's view, by code): {results['closed_during_run'] or 'none'}")
    print(f"  load average (1 min): {results['load_average_1min']}")
    print("  CPU: 'connect' per connection, 'burst' per notification")
    print_cpu_table(scenarios, {"realtime": memory["realtime_peak_rss_mib"]})


class ClientProcess:
    """A process holding its share of the sockets (asyncio), told what to do over a pipe."""

    def __init__(self, url: str, sockets: list[tuple[int, str]], *, concurrency: int) -> None:
        # Spawned: the bench process has threads (CPU tracking, database pools) a fork would copy.
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(target=hold_sockets, args=(url, sockets, concurrency, child))
        self._process.start()
        child.close()
        self._answer(timeout=120)  # ready

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def connect(self) -> None:
        """Start opening the sockets; `connected()` waits for them."""
        self._control.send("connect")

    def connected(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._answer(timeout=1800)
        return answer

    def received(self) -> int:
        self._control.send("count")
        count: int = self._answer(timeout=60)
        return count

    def finish(self) -> dict[str, Any]:
        """What was received; the process then exits, closing its sockets."""
        self._control.send("finish")
        answer: dict[str, Any] = self._answer(timeout=120)
        return answer

    def stop(self) -> None:
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _answer(self, *, timeout: float) -> Any:
        if not self._control.poll(timeout):
            raise Timeout(f"no answer from the client process {self.pid} in {timeout} s")
        return self._control.recv()


def hold_sockets(url: str, sockets: list[tuple[int, str]], concurrency: int, control: Connection) -> None:
    """A client process: open the sockets (user index, token), read them until told to finish."""
    asyncio.run(_hold_sockets(url, sockets, concurrency, control))


async def _hold_sockets(
    url: str, sockets: list[tuple[int, str]], concurrency: int, control: Connection
) -> None:
    loop = asyncio.get_running_loop()
    control.send("ready")
    await loop.run_in_executor(None, control.recv)  # connect
    receipts: list[tuple[str, float]] = []
    closed: Counter[str] = Counter()
    connected: Counter[int] = Counter()
    handshakes: list[float] = []
    failures: list[str] = []
    readers: set[asyncio.Task[None]] = set()
    handshaking = asyncio.Semaphore(concurrency)

    async def read(socket: ClientConnection) -> None:
        try:
            async for message in socket:
                at = time.time()
                event = json.loads(message)
                if event["type"] == "notification":
                    receipts.append((event["notification"]["id"], at))
        except ConnectionClosed:
            pass
        closed[str(socket.close_code)] += 1

    async def open_socket(user: int, token: str) -> None:
        failure = ""
        async with handshaking:
            for _ in range(3):
                started = time.perf_counter()
                try:
                    # No client pings (the client sends nothing); compression offered, as browsers do.
                    socket = await connect(url + token, open_timeout=120, ping_interval=None, proxy=None)
                    await socket.recv()  # missed_notifications
                except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as error:
                    failure = repr(error)
                    await asyncio.sleep(1)
                    continue
                handshakes.append(time.perf_counter() - started)
                connected[user] += 1
                readers.add(asyncio.create_task(read(socket)))
                return
        failures.append(failure)

    await asyncio.gather(*(open_socket(user, token) for user, token in sockets))
    control.send({"connected": dict(connected), "handshake_seconds": handshakes, "failures": failures})
    while await loop.run_in_executor(None, control.recv) == "count":  # else "finish"
        control.send(len(receipts))
    control.send({"receipts": receipts, "closed": dict(closed)})


if __name__ == "__main__":
    main()
