import uvicorn

from pulse.observability.logging import configure_logging
from pulse.startup import load_settings
from services.api.settings import ApiSettings


def main() -> None:
    configure_logging("api")
    settings = load_settings(ApiSettings, "api")
    uvicorn.run(
        "services.api.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        log_config=None,  # Keep the JSON logging configured above.
        log_level="info",
    )


if __name__ == "__main__":
    main()
