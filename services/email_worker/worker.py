"""The email worker's Celery app. Start it with `python -m services.email_worker`."""

from datetime import timedelta

from celery import Celery

from pulse.channels.email import SmtpProvider
from pulse.db import make_engine, make_session_factory
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.worker import make_channel_worker
from pulse.vocabulary import Channel
from services.email_worker.settings import EmailWorkerSettings


def create_worker(settings: EmailWorkerSettings) -> Celery:
    database = settings.database.model_copy(update={"pool_size": settings.concurrency})
    return make_channel_worker(
        "pulse-email-worker",
        channels=[Channel.EMAIL],
        providers=ProviderChain(
            [SmtpProvider(settings.smtp)],
            BreakerSettings(
                failure_threshold=settings.circuit_failures,
                failure_rate=settings.circuit_failure_rate,
                cooldown_seconds=settings.circuit_cooldown_seconds,
            ),
        ),
        broker=settings.broker,
        session_factory=make_session_factory(make_engine(database)),
        claim_lease=timedelta(seconds=settings.claim_lease_seconds),
        retries=settings.retries,
    )
