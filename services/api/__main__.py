import uvicorn

from services.api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    uvicorn.run(
        "services.api.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        access_log=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
