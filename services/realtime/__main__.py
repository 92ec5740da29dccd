import uvicorn

from pulse.observability.logging import configure_logging
from pulse.startup import load_settings
from services.realtime.settings import RealtimeSettings


def main() -> None:
    configure_logging("realtime")
    settings = load_settings(RealtimeSettings, "realtime")
    uvicorn.run(
        "services.realtime.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        # The protocol layer refuses a larger message (close 1009) before the app reads any of it.
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=settings.compression,
        access_log=False,
        log_config=None,  # Keep the JSON logging configured above.
        # Warnings only: uvicorn logs each WebSocket request line, query string (the token) and all.
        log_level="warning",
    )


if __name__ == "__main__":
    main()
