from pulse.delivery.worker import run_worker
from pulse.observability.logging import configure_logging
from pulse.startup import load_settings
from services.push_worker.settings import PushWorkerSettings
from services.push_worker.worker import create_worker


def main() -> None:
    configure_logging("push-worker")
    settings = load_settings(PushWorkerSettings, "push worker")
    run_worker(create_worker(settings), hostname=settings.node_name("push"), settings=settings)


if __name__ == "__main__":
    main()
