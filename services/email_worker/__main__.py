from pulse.observability.metrics import serve_metrics
from services.email_worker.settings import EmailWorkerSettings
from services.email_worker.worker import create_worker


def main() -> None:
    settings = EmailWorkerSettings()
    serve_metrics(settings.metrics_port, settings.metrics_host)
    create_worker(settings).worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.concurrency}",
            f"--prefetch-multiplier={settings.prefetch_multiplier}",
            "--hostname=email@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
