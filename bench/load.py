"""The benchmark's clients: prepared request bodies sent from keep-alive connections, as fast as the
gateway answers or on a fixed schedule.

Plain http.client in threads: the load generator shares the machine with every service, so it must be
cheap (an asyncio client cost more CPU than the gateway itself). Bodies are serialised before the
clock starts.
"""

import http.client
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

SINGLE_PATH = "/v1/notifications"
BATCH_PATH = "/v1/notifications/batch"


def email(index: int, *, label: str, priority: str) -> dict[str, object]:
    # One recipient per notification: the per-recipient rate limit (on, at its default) never refuses.
    return {
        "channel": "email",
        "recipient": f"{label}-{index}@example.com",
        "priority": priority,
        "content": {"subject": f"Bench {index}", "body": "Hello from the benchmark."},
    }


def single_bodies(count: int, *, label: str, priority: str = "normal") -> list[bytes]:
    return [json.dumps(email(index, label=label, priority=priority)).encode() for index in range(count)]


def batch_bodies(count: int, *, size: int, label: str, priority: str = "normal") -> list[bytes]:
    """`count` emails in batches of up to `size`."""
    bodies = []
    for start in range(0, count, size):
        items = [
            email(index, label=label, priority=priority) for index in range(start, min(start + size, count))
        ]
        # Compact: a batch of 1000 stays well under the gateway's body limit (256 KiB by default).
        bodies.append(json.dumps({"notifications": items}, separators=(",", ":")).encode())
    return bodies


@dataclass(frozen=True)
class Sent:
    seconds: float  # from the first request to the last answer
    max_late_ms: float  # paced sends: how far behind its schedule the most delayed request started


def send(
    api_port: int,
    api_key: str,
    path: str,
    bodies: Sequence[bytes],
    *,
    clients: int,
    per_second: float | None = None,
) -> Sent:
    """POST each body once from `clients` keep-alive connections: back to back, or (`per_second`)
    the i-th at start + i / per_second whatever the answers take (open loop, as long as a connection is
    free). Every answer must be 202, and a batch must have had no item refused."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    indexes = iter(range(len(bodies)))
    lock = threading.Lock()
    late = [0.0]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", api_port, timeout=60)
        while True:
            with lock:
                index = next(indexes, None)
            if index is None:
                connection.close()
                return
            if per_second is not None:
                delay = started + index / per_second - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    with lock:
                        late[0] = max(late[0], -delay)
            connection.request("POST", path, body=bodies[index], headers=headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 202 or (path == BATCH_PATH and json.loads(payload)["refused"]):
                raise RuntimeError(f"{path} answered {response.status}: {payload[:300]!r}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return Sent(seconds=time.perf_counter() - started, max_late_ms=round(late[0] * 1000, 1))
