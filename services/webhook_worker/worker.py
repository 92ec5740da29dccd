"""The webhook worker's Celery app. Start it with `python -m services.webhook_worker`."""

import uuid

from celery import Celery

from pulse.channels.webhook import SecretCache, WebhookProvider
from pulse.db import make_engine, make_session_factory, transaction
from pulse.delivery.worker import make_channel_worker
from pulse.vocabulary import Channel
from pulse.webhooks.secrets import SigningSecrets, signing_secrets
from services.webhook_worker.settings import WebhookWorkerSettings


def create_worker(settings: WebhookWorkerSettings) -> Celery:
    # A small pool of its own: secrets are read once per tenant per cache period.
    database = settings.database.model_copy(update={"pool_size": 2})
    session_factory = make_session_factory(make_engine(database))

    def load_secrets(tenant_id: uuid.UUID) -> SigningSecrets:
        with transaction(session_factory) as session:
            return signing_secrets(session, tenant_id)

    secrets = SecretCache(load_secrets, settings.webhook.secret_cache_seconds)
    provider = WebhookProvider(settings.webhook, secrets)
    return make_channel_worker(
        "pulse-webhook-worker",
        channels=[Channel.WEBHOOK],
        providers=[provider],
        settings=settings,
        rate_limits={provider.name: settings.webhook.rate_limit_per_host},
    )
