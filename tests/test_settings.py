"""Every service reads its settings from `PULSE_*` environment variables (CONTRACT.md)."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pulse.admin.settings import AdminSettings
from pulse.settings import (
    DEVELOPMENT_JWT_SECRET,
    BrokerSettings,
    DatabaseSettings,
    SmtpSettings,
    TwilioSettings,
)
from pulse.vocabulary import Channel
from services.api.settings import ApiSettings
from services.email_worker.settings import EmailWorkerSettings
from services.push_worker.settings import PushWorkerSettings
from services.scheduler.settings import SchedulerSettings
from services.sms_worker.settings import SmsWorkerSettings
from services.webhook_worker.settings import WebhookWorkerSettings

DATABASE_URL = "postgresql+psycopg://pulse:secret@db.internal:6543/pulse_prod"
BROKER_URL = "amqp://pulse:secret@mq.internal:5673/pulse"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PULSE_* variable from the caller's shell, and no `.env` in the working directory."""
    for name in list(os.environ):
        if name.startswith("PULSE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def smtp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PULSE_SMTP_HOST": "smtp.example.net",
        "PULSE_SMTP_PORT": "587",
        "PULSE_SMTP_USERNAME": "mailer",
        "PULSE_SMTP_PASSWORD": "hunter2-very-secret",
        "PULSE_SMTP_STARTTLS": "true",
        "PULSE_SMTP_FROM": "Acme <alerts@acme.example>",
    }.items():
        monkeypatch.setenv(name, value)


def test_the_defaults_point_at_localhost() -> None:
    settings = ApiSettings()
    assert settings.database.url == "postgresql+psycopg://postgres@localhost:5432/pulse"
    assert settings.broker.url == "amqp://guest:guest@localhost:5672//"
    assert settings.api_port == 8000
    assert settings.enable_docs is True
    assert settings.enabled_channels == [
        Channel.EMAIL,
        Channel.SMS,
        Channel.WHATSAPP,
        Channel.PUSH,
        Channel.WEBHOOK,
        Channel.INAPP,
    ]
    assert settings.webhook_allowlist == ""
    assert settings.max_body_bytes == 256 * 1024
    assert settings.jwt.secret.get_secret_value() == DEVELOPMENT_JWT_SECRET


def test_the_jwt_secret_is_read_from_the_environment_and_must_be_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_JWT_SECRET", "s" * 40)
    assert ApiSettings().jwt.secret.get_secret_value() == "s" * 40
    monkeypatch.setenv("PULSE_JWT_SECRET", "short")
    with pytest.raises(ValidationError, match="secret"):
        ApiSettings()


def test_the_api_reads_database_broker_port_docs_and_channels_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("PULSE_BROKER_URL", BROKER_URL)
    monkeypatch.setenv("PULSE_API_PORT", "18000")
    monkeypatch.setenv("PULSE_ENABLE_DOCS", "false")
    monkeypatch.setenv("PULSE_ENABLED_CHANNELS", "email, sms")

    settings = ApiSettings()

    assert settings.database.url == DATABASE_URL
    assert settings.broker.url == BROKER_URL
    assert settings.api_port == 18000
    assert settings.enable_docs is False
    assert settings.enabled_channels == [Channel.EMAIL, Channel.SMS]


@pytest.mark.parametrize("channels", ["email,fax", "carrier-pigeon"])
def test_an_unknown_channel_name_is_a_validation_error(
    monkeypatch: pytest.MonkeyPatch, channels: str
) -> None:
    monkeypatch.setenv("PULSE_ENABLED_CHANNELS", channels)
    with pytest.raises(ValidationError, match="enabled_channels"):
        ApiSettings()


def test_a_non_numeric_port_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_API_PORT", "eighty")
    with pytest.raises(ValidationError, match="api_port"):
        ApiSettings()


def test_the_smtp_block_reads_every_smtp_variable(smtp_environment: None) -> None:
    smtp = SmtpSettings()
    assert smtp.host == "smtp.example.net"
    assert smtp.port == 587
    assert smtp.username == "mailer"
    assert isinstance(smtp.password, SecretStr)
    assert smtp.password.get_secret_value() == "hunter2-very-secret"
    assert smtp.starttls is True
    assert smtp.from_address == "Acme <alerts@acme.example>"


def test_the_email_worker_combines_shared_blocks_with_its_own_prefix(
    monkeypatch: pytest.MonkeyPatch, smtp_environment: None
) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("PULSE_BROKER_URL", BROKER_URL)
    monkeypatch.setenv("PULSE_EMAIL_WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("PULSE_EMAIL_WORKER_CLAIM_LEASE_SECONDS", "7")
    monkeypatch.setenv("PULSE_EMAIL_WORKER_METRICS_PORT", "19101")

    settings = EmailWorkerSettings()

    assert settings.database.url == DATABASE_URL
    assert settings.broker.url == BROKER_URL
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.starttls) == ("smtp.example.net", 587, True)
    assert settings.smtp.from_address == "Acme <alerts@acme.example>"
    assert (settings.concurrency, settings.claim_lease_seconds, settings.metrics_port) == (3, 7, 19101)


def test_the_smtp_password_never_appears_in_a_repr(smtp_environment: None) -> None:
    for shown in (repr(SmtpSettings()), str(SmtpSettings()), repr(EmailWorkerSettings())):
        assert "hunter2-very-secret" not in shown
        assert "**********" in shown


def test_the_sms_worker_reads_the_twilio_accounts_and_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = TwilioSettings()
    assert (defaults.base_url, defaults.from_number, defaults.secondary_settings()) == (
        "http://127.0.0.1:8025",
        "+15005550006",
        None,
    )
    for name, value in {
        "PULSE_DATABASE_URL": DATABASE_URL,
        "PULSE_TWILIO_BASE_URL": "https://api.twilio.com",
        "PULSE_TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "PULSE_TWILIO_AUTH_TOKEN": "twilio-very-secret",
        "PULSE_TWILIO_FROM": "+14155550199",
        "PULSE_TWILIO_SECONDARY__BASE_URL": "https://api.backup.example",
        "PULSE_TWILIO_SECONDARY__ACCOUNT_SID": "AC" + "2" * 32,
        "PULSE_SMS_WORKER_CONCURRENCY": "8",
        "PULSE_SMS_WORKER_METRICS_PORT": "9302",
    }.items():
        monkeypatch.setenv(name, value)
    settings = SmsWorkerSettings()
    assert settings.database.url == DATABASE_URL
    assert (settings.concurrency, settings.metrics_port) == (8, 9302)
    twilio = settings.twilio
    assert (twilio.base_url, twilio.account_sid, twilio.from_number) == (
        "https://api.twilio.com",
        "AC" + "1" * 32,
        "+14155550199",
    )
    assert twilio.auth_token.get_secret_value() == "twilio-very-secret"
    assert "twilio-very-secret" not in repr(settings)
    secondary = twilio.secondary_settings()
    assert secondary is not None
    assert (secondary.base_url, secondary.account_sid) == ("https://api.backup.example", "AC" + "2" * 32)
    assert SmsWorkerSettings.model_fields["metrics_port"].default == 9102


def test_the_scheduler_and_admin_read_the_shared_database_and_broker_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("PULSE_BROKER_URL", BROKER_URL)
    monkeypatch.setenv("PULSE_SCHEDULER_TICK_SECONDS", "0.25")
    monkeypatch.setenv("PULSE_SCHEDULER_METRICS_PORT", "19105")

    scheduler = SchedulerSettings()
    admin = AdminSettings()

    assert (scheduler.database.url, scheduler.broker.url) == (DATABASE_URL, BROKER_URL)
    assert (scheduler.tick_seconds, scheduler.metrics_port) == (0.25, 19105)
    assert (admin.database.url, admin.broker.url) == (DATABASE_URL, BROKER_URL)


def test_the_shared_blocks_read_their_tuning_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_DATABASE_POOL_SIZE", "7")
    monkeypatch.setenv("PULSE_DATABASE_CONNECT_TIMEOUT_SECONDS", "1.5")
    monkeypatch.setenv("PULSE_BROKER_CONNECT_TIMEOUT_SECONDS", "4")
    assert (DatabaseSettings().pool_size, DatabaseSettings().connect_timeout_seconds) == (7, 1.5)
    assert BrokerSettings().connect_timeout_seconds == 4


def test_settings_are_read_from_a_dotenv_file_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"PULSE_DATABASE_URL={DATABASE_URL}\nPULSE_API_PORT=18001\n")
    settings = ApiSettings()
    assert settings.database.url == DATABASE_URL
    assert settings.api_port == 18001


def test_the_environment_wins_over_the_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PULSE_API_PORT=18001\n")
    monkeypatch.setenv("PULSE_API_PORT", "18002")
    assert ApiSettings().api_port == 18002


def test_the_fairness_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PULSE_DATABASE_STATEMENT_TIMEOUT_SECONDS": "5",
        "PULSE_TENANT_SENDS_PER_MINUTE": "1200",
        "PULSE_SCHEDULER_STUCK_QUEUED_SECONDS": "120",
        "PULSE_SCHEDULER_STUCK_QUEUED_EVERY_SECONDS": "15",
        "PULSE_SCHEDULER_DEAD_LETTER_RECONCILE_BATCH_SIZE": "200",
        "PULSE_RETRY_LOW_ATTEMPTS": "2",
    }.items():
        monkeypatch.setenv(name, value)

    api, scheduler = ApiSettings(), SchedulerSettings()

    assert (api.database.statement_timeout_seconds, api.tenant_sends_per_minute) == (5, 1200)
    assert (scheduler.stuck_queued_seconds, scheduler.stuck_queued_every_seconds) == (120, 15)
    assert scheduler.dead_letter_reconcile_batch_size == 200
    # The scheduler fails a notification whose worker keeps getting lost by the workers' budget.
    assert scheduler.retries.low_attempts == 2


@pytest.mark.parametrize(
    ("variable", "deadline_of"),
    [
        ("PULSE_TWILIO_DEADLINE_SECONDS", lambda: SmsWorkerSettings().twilio.deadline_seconds),
        ("PULSE_FCM_DEADLINE_SECONDS", lambda: PushWorkerSettings().fcm.deadline_seconds),
        ("PULSE_SMTP_DEADLINE_SECONDS", lambda: EmailWorkerSettings().smtp.deadline_seconds),
    ],
)
def test_the_email_sms_and_push_workers_read_their_deadline_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, deadline_of: Callable[[], float]
) -> None:
    assert deadline_of() == 15.0
    monkeypatch.setenv(variable, "2.5")
    assert deadline_of() == 2.5
    monkeypatch.setenv(variable, "0")
    with pytest.raises(ValidationError, match="deadline_seconds"):
        deadline_of()


def test_the_webhook_worker_reads_its_allowlist_and_deadline_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_WEBHOOK_ALLOWLIST", "127.0.0.1:8025,localhost:8025")
    monkeypatch.setenv("PULSE_WEBHOOK_DEADLINE_SECONDS", "2.5")

    settings = WebhookWorkerSettings().webhook

    assert (settings.allowlist, settings.deadline_seconds) == ("127.0.0.1:8025,localhost:8025", 2.5)
    monkeypatch.setenv("PULSE_WEBHOOK_DEADLINE_SECONDS", "0")
    with pytest.raises(ValidationError, match="deadline_seconds"):
        WebhookWorkerSettings()
