import pytest

from services.api.settings import ApiSettings
from services.realtime.settings import RealtimeSettings


def test_the_realtime_service_reads_its_settings_and_the_shared_blocks_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "PULSE_REALTIME_PORT": "8110",
        "PULSE_REALTIME_MAX_CONNECTIONS_PER_USER": "2",
        "PULSE_REALTIME_MAX_MESSAGE_BYTES": "1024",
        "PULSE_REALTIME_IDLE_TIMEOUT_SECONDS": "5",
        "PULSE_REALTIME_HEARTBEAT_SECONDS": "2",
        "PULSE_REALTIME_STALE_AFTER_SECONDS": "7",
        "PULSE_REALTIME_COMPRESSION": "true",
        "PULSE_JWT_SECRET": "s" * 32,
        "PULSE_DATABASE_URL": "postgresql+psycopg://db.example/pulse",
        "PULSE_CORS_ORIGINS": "https://app.example, http://localhost:8110",
    }.items():
        monkeypatch.setenv(name, value)

    settings = RealtimeSettings()
    assert (settings.port, settings.max_connections_per_user, settings.max_message_bytes) == (8110, 2, 1024)
    assert settings.idle_timeout_seconds == 5
    assert settings.compression is True
    assert (settings.presence.heartbeat_seconds, settings.presence.stale_after_seconds) == (2, 7)
    assert settings.jwt.secret.get_secret_value() == "s" * 32
    assert settings.database.url == "postgresql+psycopg://db.example/pulse"
    gateway = ApiSettings()
    assert gateway.presence.stale_after_seconds == 7
    assert gateway.cors_origins == ["https://app.example", "http://localhost:8110"]
