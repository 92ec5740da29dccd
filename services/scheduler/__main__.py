import gc
import logging
import signal

from pulse.db import make_engine, make_session_factory
from pulse.messaging.celery_app import make_celery
from pulse.observability.logging import configure_logging
from pulse.observability.metrics import serve_metrics
from pulse.startup import load_settings
from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings


def main() -> None:
    configure_logging("scheduler")
    settings = load_settings(SchedulerSettings, "scheduler")
    serve_metrics(settings.metrics_port, settings.metrics_host)
    scheduler = Scheduler(
        settings,
        make_session_factory(make_engine(settings.database)),
        make_celery("pulse-scheduler", settings.broker),
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: scheduler.stop())
    # What start-up created lives as long as the process: kept out of the collector's full passes,
    # which otherwise rescan it while a fan-out's chunks allocate thousands of objects each (a third of
    # a chunk's CPU went to them).
    gc.freeze()
    logging.getLogger("pulse.scheduler").info("scheduler running (metrics on :%d)", settings.metrics_port)
    scheduler.run_forever()


if __name__ == "__main__":
    main()
