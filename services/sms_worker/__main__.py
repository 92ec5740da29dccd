from pulse.delivery.worker import run_worker
from pulse.observability.logging import configure_logging
from pulse.observability.metrics import serve_metrics
from services.sms_worker.settings import SmsWorkerSettings
from services.sms_worker.worker import create_worker


def main() -> None:
    configure_logging("sms-worker")
    settings = SmsWorkerSettings()
    serve_metrics(settings.metrics_port, settings.metrics_host)
    run_worker(
        create_worker(settings),
        hostname="sms@%h",
        concurrency=settings.concurrency,
        prefetch_multiplier=settings.prefetch_multiplier,
    )


if __name__ == "__main__":
    main()
