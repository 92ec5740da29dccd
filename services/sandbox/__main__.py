"""Run the sandbox: ``python -m services.sandbox`` (configured by ``PULSE_SANDBOX_*``)."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from pulse.observability.logging import configure_logging
from services.sandbox.app import Lifespan, create_app
from services.sandbox.faults import FaultInjector
from services.sandbox.settings import SandboxSettings
from services.sandbox.smtp import create_smtp_controller
from services.sandbox.store import MessageStore

log = logging.getLogger("services.sandbox")


def smtp_lifespan(smtp: Controller, settings: SandboxSettings, *more: Controller) -> Lifespan:
    # Tied to uvicorn's lifespan because uvicorn handles SIGINT/SIGTERM: it runs the shutdown half, then
    # re-raises the signal, so code after uvicorn.run() (even a finally) is not reached on SIGTERM.
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        controllers = (smtp, *more)
        for controller in controllers:
            await asyncio.to_thread(controller.start)
        http_url = f"http://{settings.host}:{settings.http_port}"
        log.info(
            "sandbox up: SMTP smtp://%s:%d, inbox %s/, API %s/api/messages",
            settings.host,
            settings.smtp_port,
            http_url,
            http_url,
        )
        try:
            yield
        finally:
            for controller in controllers:
                await asyncio.to_thread(controller.stop)
            log.info("sandbox stopped")

    return lifespan


def main() -> None:
    configure_logging("sandbox")
    # aiosmtpd logs every connection and command at INFO: far too much at benchmark rates.
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    settings = SandboxSettings()
    store, faults = MessageStore(settings.max_messages), FaultInjector()
    smtp = create_smtp_controller(store, faults, settings.host, settings.smtp_port)
    more: list[Controller] = []
    if settings.smtp_secondary_port is not None:
        # A second relay on the same store, for the email worker's failover (fault account "secondary").
        more.append(
            create_smtp_controller(
                store,
                faults,
                settings.host,
                settings.smtp_secondary_port,
                account="secondary",
                provider="smtp-secondary",
            )
        )
    app = create_app(store, faults, lifespan=smtp_lifespan(smtp, settings, *more))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
