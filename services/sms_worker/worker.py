"""The sms worker's Celery app. Start it with `python -m services.sms_worker`."""

from datetime import timedelta

from celery import Celery

from pulse.channels.sms import TwilioProvider
from pulse.db import make_engine, make_session_factory
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.providers import Provider
from pulse.delivery.worker import make_channel_worker
from pulse.vocabulary import Channel
from services.sms_worker.settings import SmsWorkerSettings


def create_worker(settings: SmsWorkerSettings) -> Celery:
    database = settings.database.model_copy(update={"pool_size": settings.concurrency})
    providers: list[Provider] = [TwilioProvider(settings.twilio)]
    if (secondary := settings.twilio.secondary()) is not None:
        providers.append(TwilioProvider(secondary, name="twilio-secondary"))
    return make_channel_worker(
        "pulse-sms-worker",
        channels=[Channel.SMS, Channel.WHATSAPP],
        providers=ProviderChain(
            providers,
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
