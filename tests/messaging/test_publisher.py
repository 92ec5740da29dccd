"""The confirmed publisher on a private vhost: stale connections are replaced, refusals are errors."""

import json
import uuid

import httpx
import pytest
from kombu import Connection, Queue

from devtools.stack import MANAGEMENT_API, Infrastructure
from pulse.messaging.depths import ready_messages
from pulse.messaging.publisher import ConfirmedPublisher, TaskMessage, UnconfirmedPublish
from pulse.messaging.topology import NOTIFICATIONS_EXCHANGE
from tests.conftest import wait_until


def _vhost(infrastructure: Infrastructure) -> str:
    return infrastructure.broker_url.rsplit("/", 1)[1]


def _connections(infrastructure: Infrastructure) -> list[str]:
    response = httpx.get(f"{MANAGEMENT_API}/vhosts/{_vhost(infrastructure)}/connections", timeout=10)
    response.raise_for_status()
    return [connection["name"] for connection in response.json()]


def _depth(infrastructure: Infrastructure, queue: str) -> int:
    with Connection(infrastructure.broker_url) as connection:
        return ready_messages(connection.default_channel, queue)


def test_a_connection_the_broker_closed_is_replaced_and_the_publish_still_goes_through(
    publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    queue = "pulse.inapp.low"  # Nothing consumes it in the private vhost.
    before = _depth(private, queue)
    publisher.publish([TaskMessage(uuid.uuid4(), "inapp.low")])
    names = wait_until(
        lambda: _connections(private), timeout=90, what="the publisher's connection to be listed"
    )
    for name in names:  # As an idle connection reset, or a broker restart, would leave it.
        httpx.delete(f"{MANAGEMENT_API}/connections/{name}", timeout=10).raise_for_status()
    wait_until(lambda: not _connections(private), timeout=90, what="the connection to be closed")

    publisher.publish([TaskMessage(uuid.uuid4(), "inapp.low"), TaskMessage(uuid.uuid4(), "inapp.low")])

    assert _depth(private, queue) == before + 3


def test_messages_the_broker_refuses_are_an_error(
    publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    # A full queue that refuses new messages, bound beside pulse.inapp.critical.
    full = Queue(
        f"refusing-{uuid.uuid4().hex[:6]}",
        NOTIFICATIONS_EXCHANGE,
        routing_key="inapp.critical",
        queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        auto_delete=True,
    )
    with Connection(private.broker_url) as connection:
        full(connection.default_channel).declare()
        with pytest.raises(UnconfirmedPublish, match="refused 1 of 2"):
            publisher.publish(
                [TaskMessage(uuid.uuid4(), "inapp.low"), TaskMessage(uuid.uuid4(), "inapp.critical")]
            )
        full(connection.default_channel).delete()

    publisher.publish([TaskMessage(uuid.uuid4(), "inapp.low")])  # The next publish is unaffected.


def test_a_group_of_messages_goes_out_in_one_socket_write_each_intact(
    publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    """py-amqp writes through its transport's `_write` (the socket's sendall); the publisher gathers a
    group's frames there. Should py-amqp write another way, this fails."""
    queue = "pulse.inapp.normal"  # Nothing consumes it in the private vhost.
    publisher.publish([TaskMessage(uuid.uuid4(), "inapp.normal")])  # Connected; its message read below.
    connection = publisher._connection  # The socket under the publisher.
    assert connection is not None
    transport = connection.connection.transport
    send_all = transport._write
    writes: list[int] = []
    transport._write = lambda data: writes.append(len(data)) or send_all(data)
    ids = [uuid.uuid4() for _ in range(300)]

    publisher.publish([TaskMessage(id, "inapp.normal") for id in ids])

    assert len(writes) == 1 and writes[0] > 300 * 100
    with Connection(private.broker_url) as reader:
        channel = reader.default_channel
        bodies = [json.loads(channel.basic_get(queue, no_ack=True).body) for _ in range(301)]
    assert [args for args, _, _ in bodies[1:]] == [[str(id)] for id in ids]
