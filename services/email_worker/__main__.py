from pulse.delivery.worker import run_worker
from pulse.observability.logging import configure_logging
from pulse.startup import load_settings
from services.email_worker.settings import EmailWorkerSettings
from services.email_worker.worker import create_worker


def main() -> None:
    configure_logging("email-worker")
    settings = load_settings(EmailWorkerSettings, "email worker")
    run_worker(create_worker(settings), hostname=settings.node_name("email"), settings=settings)


if __name__ == "__main__":
    main()
