"""The sandbox's HTTP side served in-process, for testing providers against it over real HTTP, and a
server whose answers misbehave below HTTP (dripped, endless)."""

import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest
import uvicorn

from devtools.stack import free_port
from pulse.errors import TransientProviderError
from services.sandbox.app import create_app
from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore

HOST = "127.0.0.1"
Sandbox = tuple[str, MessageStore, FaultInjector]


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[Sandbox]:
    store, faults = MessageStore(max_messages=1000), FaultInjector()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store, faults), host=HOST, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "sandbox did not start"
        time.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}", store, faults
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def sandbox(sandbox_url: Sandbox) -> Iterator[Sandbox]:
    """The sandbox, emptied and without faults."""
    _, store, faults = sandbox_url
    store.clear()
    faults.clear()
    yield sandbox_url
    faults.clear()


class RawServer(Protocol):
    """Serves the first connection the given raw bytes, `chunk` bytes every `pause` seconds, once it has
    read an HTTP request (or at once, for a protocol where the server speaks first); returns the URL."""

    def __call__(self, answer: bytes, chunk: int, pause: float, *, read_request: bool = True) -> str: ...


# A status line and headers that take 24 s at a byte every 0.1 s: a per-operation timeout never trips.
SLOW_HEAD = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"." * 200 + b"\r\nContent-Length: 0\r\n\r\n"


def huge_answer() -> bytes:
    """A 503 with a 16 MiB body."""
    size = 16 * 1024 * 1024
    return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % size + bytes(size)


def assert_cut_at_half_a_second(send: Callable[[], object]) -> None:
    """`send`, by a provider with a 0.5 s deadline to a server dripping SLOW_HEAD (each byte well
    within the read timeout), fails as worth trying again by then."""
    started = time.monotonic()
    with pytest.raises(TransientProviderError, match=r"no answer within the 0\.5 s deadline"):
        send()
    assert time.monotonic() - started < 1.5


def assert_read_in_little_memory(send: Callable[[], object], error: str) -> None:
    """`send`, to a server answering 16 MiB or more, fails with `error` without holding the answer."""
    tracemalloc.start()
    try:
        with pytest.raises(TransientProviderError, match=error):
            send()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # only the first 64 KiB are read


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    """A server (on a port of its own) answering the first connection with raw bytes at its own pace:
    a provider, or anything in between, that drips its answer or never stops sending."""
    listener = socket.create_server((HOST, 0))
    done = threading.Event()
    threads: list[threading.Thread] = []

    def serve(answer: bytes, chunk: int, pause: float, read_request: bool) -> None:
        connection, _ = listener.accept()
        with connection:
            if read_request:
                _read_request(connection)  # all of it: closing with some unread would reset the connection
            view = memoryview(answer)
            for start in range(0, len(answer), chunk):
                if done.wait(pause):
                    return
                try:
                    connection.sendall(view[start : start + chunk])
                except OSError:  # the client gave up
                    return

    def start(answer: bytes, chunk: int, pause: float, *, read_request: bool = True) -> str:
        threads.append(threading.Thread(target=serve, args=(answer, chunk, pause, read_request), daemon=True))
        threads[-1].start()
        return f"http://{HOST}:{listener.getsockname()[1]}"

    yield start
    done.set()
    listener.close()
    for thread in threads:
        thread.join(5)


def _read_request(connection: socket.socket) -> None:
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += connection.recv(65536)
