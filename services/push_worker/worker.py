"""The push worker's Celery app. Start it with `python -m services.push_worker`."""

from celery import Celery

from pulse.channels.push import FcmProvider
from pulse.db import make_engine, make_session_factory
from pulse.delivery.providers import Provider
from pulse.delivery.worker import make_channel_worker
from pulse.recipients.push_tokens import invalid_token_recorder
from pulse.vocabulary import Channel
from services.push_worker.settings import PushWorkerSettings


def create_worker(settings: PushWorkerSettings) -> Celery:
    # A small pool of its own for the rare invalid-token records (the sending threads have theirs).
    database = settings.database.model_copy(update={"pool_size": 2})
    record_invalid = invalid_token_recorder(make_session_factory(make_engine(database)))
    providers: list[Provider] = [FcmProvider(settings.fcm, on_invalid_token=record_invalid)]
    rate_limits = {"fcm": settings.fcm.rate_limit}
    if (secondary := settings.fcm.secondary_settings()) is not None:
        providers.append(FcmProvider(secondary, name="fcm-secondary", on_invalid_token=record_invalid))
        rate_limits["fcm-secondary"] = secondary.rate_limit
    return make_channel_worker(
        "pulse-push-worker",
        channels=[Channel.PUSH],
        providers=providers,
        settings=settings,
        rate_limits=rate_limits,
    )
