"""The sms worker's Celery app (sms and whatsapp). Start it with `python -m services.sms_worker`."""

from celery import Celery

from pulse.channels.sms import TwilioProvider
from pulse.delivery.providers import Provider
from pulse.delivery.worker import make_channel_worker
from pulse.vocabulary import Channel
from services.sms_worker.settings import SmsWorkerSettings


def create_worker(settings: SmsWorkerSettings) -> Celery:
    providers: list[Provider] = [TwilioProvider(settings.twilio)]
    rate_limits = {"twilio": settings.twilio.rate_limit}
    if (secondary := settings.twilio.secondary_settings()) is not None:
        providers.append(TwilioProvider(secondary, name="twilio-secondary"))
        rate_limits["twilio-secondary"] = secondary.rate_limit
    return make_channel_worker(
        "pulse-sms-worker",
        channels=[Channel.SMS, Channel.WHATSAPP],
        providers=providers,
        settings=settings,
        rate_limits=rate_limits,
    )
