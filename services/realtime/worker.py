"""The inapp worker: consumes `inapp.*`, stores each notification in its user's inbox (it becomes
`delivered`) and then pushes it to the realtime processes, which hold the user's open connections.

Start it with `python -m services.realtime.worker`.
"""

import uuid

from celery import Celery
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.channels.inapp import InboxProvider
from pulse.db import make_engine, make_session_factory, transaction
from pulse.delivery.worker import ChannelWorkerSettings, make_channel_worker, run_worker
from pulse.inapp.events import RealtimePublisher, notification_event
from pulse.inapp.inbox import delivered_items
from pulse.observability.logging import configure_logging
from pulse.vocabulary import Channel


class InappWorkerSettings(ChannelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PULSE_INAPP_WORKER_", env_file=".env", extra="ignore")

    metrics_port: int = Field(9106, description="Port of the /metrics endpoint.")


def create_worker(settings: InappWorkerSettings) -> Celery:
    # A small pool of its own, for reading what each batch delivered.
    database = settings.database.model_copy(update={"pool_size": 2})
    session_factory = make_session_factory(make_engine(database))
    realtime = RealtimePublisher(settings.broker)

    def push(delivered: list[uuid.UUID]) -> None:
        """Tell the realtime processes, once the batch is committed (a user who read an item meanwhile
        is not told of it again)."""
        with transaction(session_factory) as session:
            items = delivered_items(session, delivered)
        for end_user, item in items:
            realtime.publish(end_user, notification_event(end_user, item))

    return make_channel_worker(
        "pulse-inapp-worker",
        channels=[Channel.INAPP],
        providers=[InboxProvider()],
        settings=settings,
        after_delivery=push,
    )


def main() -> None:
    configure_logging("inapp-worker")
    settings = InappWorkerSettings()
    run_worker(create_worker(settings), hostname=settings.node_name("inapp"), settings=settings)


if __name__ == "__main__":
    main()
