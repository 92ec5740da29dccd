"""The broker topology as declared in the test vhost: queues, dead-letter and unroutable routing.

The `stack` fixture's channel workers may consume every `pulse.<channel>.<priority>` queue in this vhost,
so messages are only looked for in queues nothing consumes (dead-letter, unroutable), or in a private
vhost, and every message a test publishes is taken out again.
"""

import json
import subprocess
import uuid
from typing import Any

import pytest
from kombu import Connection
from kombu.transport.native_delayed_delivery import calculate_routing_key, level_name

from devtools.stack import Infrastructure
from pulse.messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    NOTIFICATIONS_EXCHANGE,
    declare_topology,
    priority_of,
    routing_key,
)
from pulse.vocabulary import Channel, Priority
from tests.conftest import wait_until


def _vhost(infrastructure: Infrastructure) -> str:
    return infrastructure.broker_url.rsplit("/", 1)[1]


def _queues(infrastructure: Infrastructure) -> dict[str, dict[str, Any]]:
    output = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "--formatter",
            "json",
            "list_queues",
            "-p",
            _vhost(infrastructure),
            "name",
            "type",
            "arguments",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {
        queue["name"]: {
            "type": queue["type"],
            "arguments": {name: value for name, _, value in queue["arguments"]},
        }
        for queue in json.loads(output)
    }


def _publish(broker_url: str, exchange: str, routing_key: str, marker: str) -> None:
    """Publish with publisher confirms: once this returns, the broker has routed the message."""
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        connection.Producer().publish(
            {"marker": marker}, exchange=exchange, routing_key=routing_key, serializer="json", declare=[]
        )


def _take(broker_url: str, queue: str, marker: str) -> int:
    """Remove the messages carrying `marker` from `queue`; return how many there were.

    Other messages (say, an e2e test's dead letters) are left unacknowledged and so go back.
    """
    taken = 0
    with Connection(broker_url) as connection:
        channel = connection.channel()
        try:
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                body = message.body
                if marker in (body.decode() if isinstance(body, bytes) else body):
                    channel.basic_ack(message.delivery_tag)
                    taken += 1
        finally:
            channel.close()
    return taken


def test_every_work_dead_letter_and_unroutable_queue_exists_as_a_quorum_queue(
    infrastructure: Infrastructure,
) -> None:
    queues = _queues(infrastructure)
    for channel in Channel:
        for priority in Priority:
            work = queues[f"pulse.{channel}.{priority}"]
            assert work["type"] == "quorum", f"pulse.{channel}.{priority}"
            assert work["arguments"]["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE.name
        assert queues[f"pulse.{channel}.dead"]["type"] == "quorum", f"pulse.{channel}.dead"
    assert queues["pulse.unroutable"]["type"] == "quorum"


def test_the_exchanges_including_celerys_delayed_delivery_ones_exist(infrastructure: Infrastructure) -> None:
    with Connection(infrastructure.broker_url) as connection:
        channel = connection.channel()
        try:
            # A passive declare fails (and closes the channel) if the exchange is missing.
            for name in (
                NOTIFICATIONS_EXCHANGE.name,
                DEAD_LETTER_EXCHANGE.name,
                "pulse.unroutable",
                "celery_delayed_delivery",
                level_name(0),
                level_name(27),
            ):
                channel.exchange_declare(name, "topic", passive=True)
        finally:
            channel.close()


@pytest.mark.parametrize(
    "routing_key",
    [
        pytest.param("email.high", id="plain"),
        pytest.param(calculate_routing_key(5, "email.high"), id="after-native-delayed-delivery"),
    ],
)
def test_a_dead_letter_is_routed_to_its_channels_dead_letter_queue_only(
    infrastructure: Infrastructure, routing_key: str
) -> None:
    marker = str(uuid.uuid4())
    _publish(infrastructure.broker_url, DEAD_LETTER_EXCHANGE.name, routing_key, marker)

    wait_until(
        lambda: _take(infrastructure.broker_url, "pulse.email.dead", marker),
        timeout=5,
        what=f"the dead letter with routing key {routing_key!r} in pulse.email.dead",
    )
    for other in Channel:
        if other is not Channel.EMAIL:
            assert _take(infrastructure.broker_url, f"pulse.{other}.dead", marker) == 0, other


def test_a_publish_with_an_unbound_routing_key_lands_in_the_unroutable_queue(
    infrastructure: Infrastructure,
) -> None:
    marker = str(uuid.uuid4())
    _publish(infrastructure.broker_url, NOTIFICATIONS_EXCHANGE.name, "nosuch.normal", marker)

    assert (
        wait_until(
            lambda: _take(infrastructure.broker_url, "pulse.unroutable", marker),
            timeout=5,
            what="the unroutable message in pulse.unroutable",
        )
        == 1
    )


def test_a_message_delayed_through_native_delayed_delivery_reaches_its_work_queue(
    private: Infrastructure,
) -> None:
    """What a Celery retry with a countdown does: publish to the top delay level, keyed by the delay.

    In a private vhost, where no worker consumes the work queue, so the message stays in it.
    """
    marker = str(uuid.uuid4())
    _publish(private.broker_url, level_name(27), calculate_routing_key(1, "inapp.high"), marker)

    wait_until(
        lambda: _take(private.broker_url, "pulse.inapp.high", marker),
        timeout=10,
        what="the delayed message in pulse.inapp.high",
    )
    assert _take(private.broker_url, "pulse.inapp.normal", marker) == 0


def test_declaring_the_topology_again_is_harmless(infrastructure: Infrastructure) -> None:
    before = _queues(infrastructure)
    with Connection(infrastructure.broker_url) as connection:
        declare_topology(connection)
        declare_topology(connection)
    after = _queues(infrastructure)
    assert {name: queue["type"] for name, queue in after.items()} == {
        name: queue["type"] for name, queue in before.items()
    }


@pytest.mark.parametrize("priority", list(Priority))
def test_a_work_queues_routing_key_names_its_priority_even_delayed(priority: Priority) -> None:
    key = routing_key(Channel.SMS, priority)
    assert priority_of(key) == priority
    assert priority_of(calculate_routing_key(90, key)) == priority


@pytest.mark.parametrize("key", ["", "sms", "sms.urgent", "pulse.unroutable"])
def test_a_routing_key_that_names_no_priority_is_refused_not_taken_for_normal(key: str) -> None:
    with pytest.raises(ValueError):
        priority_of(key)
