from pulse.delivery.worker import run_worker
from pulse.observability.logging import configure_logging
from pulse.startup import load_settings
from services.webhook_worker.settings import WebhookWorkerSettings
from services.webhook_worker.worker import create_worker


def main() -> None:
    configure_logging("webhook-worker")
    settings = load_settings(WebhookWorkerSettings, "webhook worker")
    run_worker(create_worker(settings), hostname=settings.node_name("webhook"), settings=settings)


if __name__ == "__main__":
    main()
