"""The sandbox's HTTP side served in-process, for testing providers against it over real HTTP."""

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from devtools.stack import free_port
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
