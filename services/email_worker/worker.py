"""The email worker's Celery app. Start it with `python -m services.email_worker`."""

from celery import Celery

from pulse.channels.email import SmtpProvider
from pulse.delivery.providers import Provider
from pulse.delivery.worker import make_channel_worker
from pulse.vocabulary import Channel
from services.email_worker.settings import EmailWorkerSettings


def create_worker(settings: EmailWorkerSettings) -> Celery:
    providers: list[Provider] = [SmtpProvider(settings.smtp)]
    rate_limits = {"smtp": settings.smtp.rate_limit}
    if (secondary := settings.smtp.secondary_settings()) is not None:
        providers.append(SmtpProvider(secondary, name="smtp-secondary"))
        rate_limits["smtp-secondary"] = secondary.rate_limit
    return make_channel_worker(
        "pulse-email-worker",
        channels=[Channel.EMAIL],
        providers=providers,
        settings=settings,
        rate_limits=rate_limits,
    )
