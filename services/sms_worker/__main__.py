from pulse.delivery.worker import run_worker
from pulse.observability.logging import configure_logging
from pulse.startup import load_settings
from services.sms_worker.settings import SmsWorkerSettings
from services.sms_worker.worker import create_worker


def main() -> None:
    configure_logging("sms-worker")
    settings = load_settings(SmsWorkerSettings, "sms worker")
    run_worker(create_worker(settings), hostname=settings.node_name("sms"), settings=settings)


if __name__ == "__main__":
    main()
