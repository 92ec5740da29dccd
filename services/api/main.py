"""The gateway's app factory. Run with `python -m services.api`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from pulse.db import make_engine, make_session_factory
from pulse.inapp.events import RealtimePublisher
from pulse.messaging.celery_app import make_celery
from pulse.notifications.intake import Intake
from pulse.outbox.service import AfterCommitPublisher
from services.api.deps import ApiKeyCache, Gateway
from services.api.middleware import BodySizeLimit, EndUserCors, MethodNotAllowed, RequestId, RequestTiming
from services.api.problems import COMMON_ERRORS, document_problems, install_problem_handlers
from services.api.routes import (
    analytics,
    api_keys,
    audit_log,
    dashboard,
    dead_letters,
    health,
    inapp,
    notifications,
    presence,
    recipients,
    schedules,
    templates,
    topics,
    webhook_secret,
)
from services.api.settings import ApiSettings

DESCRIPTION = """
Pulse accepts notifications over one REST API and delivers them through per-channel workers.
A `202` means the notification is committed to PostgreSQL; it then ends `delivered`, `failed`
(in the dead-letter queue, with the reason) or `cancelled`. Errors are RFC 9457 problem details.
"""


ROUTERS = (
    notifications.router,
    dead_letters.router,
    schedules.router,
    templates.router,
    recipients.router,
    analytics.router,
    health.router,
    dashboard.router,
    webhook_secret.router,
    api_keys.router,
    audit_log.router,
    inapp.auth_router,
    inapp.inbox_router,
    presence.router,
    topics.router,
    topics.fanouts_router,
)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database)
        session_factory = make_session_factory(engine)
        celery = make_celery("pulse-api", settings.broker)
        publisher = AfterCommitPublisher(
            session_factory, celery, confirm_timeout_seconds=settings.broker.confirm_timeout_seconds
        )
        intake = Intake(
            session_factory,
            publish_grace=timedelta(seconds=settings.publish_grace_seconds),
            threads=settings.intake_threads,
        )
        realtime = RealtimePublisher(settings.broker)
        app.state.gateway = Gateway(
            settings=settings,
            engine=engine,
            session_factory=session_factory,
            celery=celery,
            publisher=publisher,
            intake=intake,
            api_keys=ApiKeyCache(settings.auth_cache_seconds),
            realtime=realtime,
        )
        yield
        realtime.close()
        intake.close()
        publisher.close()
        celery.close()
        engine.dispose()

    docs = settings.enable_docs
    # FastAPIOffline serves /docs and /redoc with the Swagger UI and ReDoc files its package ships
    # (under /static-offline-docs), not from a CDN: they work without Internet access.
    app = (FastAPIOffline if docs else FastAPI)(
        title="Pulse",
        version="0.1.0",
        description=DESCRIPTION,
        # BodySizeLimit answers before routing, and the database may be down, whatever the operation.
        responses=COMMON_ERRORS,
        lifespan=lifespan,
        # Pulse exports Prometheus metrics, not OpenTelemetry: FastAPI's native telemetry would only look
        # up the (unset) global providers again on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    document_problems(app)
    app.add_middleware(MethodNotAllowed, routes=[route for router in ROUTERS for route in router.routes])
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestTiming)
    app.add_middleware(RequestId)
    # Outermost: a preflight is answered before any other check.
    app.add_middleware(EndUserCors, origins=settings.cors_origins)
    return app
