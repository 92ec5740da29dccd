"""Reading settings at start (pulse.startup): production refuses development defaults, each service
for the settings it uses; database and broker URLs may be given as parts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.startup import load_settings, sandbox_defaults_kept
from services.api.settings import ApiSettings
from services.push_worker.settings import PushWorkerSettings
from services.sms_worker.settings import SmsWorkerSettings
from tests.test_settings import clean_environment  # noqa: F401 (autouse: no PULSE_* from the shell)

ROOT = Path(__file__).resolve().parents[1]

# What a production deployment of every service sets: nothing left at a development default.
PRODUCTION = {
    "PULSE_ENVIRONMENT": "production",
    "PULSE_DATABASE_URL": "postgresql+psycopg://pulse:db-secret@db.internal:5432/pulse",
    "PULSE_BROKER_URL": "amqp://pulse:mq-secret@mq.internal:5672/pulse",
    "PULSE_SMTP_HOST": "smtp.example.net",
    "PULSE_SMTP_PORT": "587",
    "PULSE_TWILIO_BASE_URL": "https://api.twilio.com",
    "PULSE_TWILIO_ACCOUNT_SID": "AC" + "7" * 32,
    "PULSE_TWILIO_AUTH_TOKEN": "twilio-secret",
    "PULSE_FCM_BASE_URL": "https://fcm.googleapis.com",
    "PULSE_FCM_PROJECT_ID": "acme-prod",
    "PULSE_FCM_CREDENTIALS_FILE": "/etc/pulse/fcm.json",
    "PULSE_JWT_SECRET": "k" * 48,
}


def _set(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def _start(module: str, environment: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Start a service as its container would; these refuse before they connect to anything."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("PULSE_")}
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**clean, "PYTHONPATH": str(ROOT), **environment},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_in_production_a_service_refuses_the_development_defaults_it_uses(tmp_path: Path) -> None:
    started = _start("services.push_worker", {"PULSE_ENVIRONMENT": "production"}, tmp_path)

    assert started.returncode != 0
    message = started.stderr.strip()
    assert "Traceback" not in message and "\n" not in message  # one paragraph
    assert message.startswith("push worker: refusing to start in production")
    for variable in (
        "PULSE_DATABASE_USER and PULSE_DATABASE_PASSWORD",
        "PULSE_BROKER_USER and PULSE_BROKER_PASSWORD",
        "PULSE_FCM_BASE_URL",
        "PULSE_FCM_PROJECT_ID",
        "PULSE_FCM_ACCESS_TOKEN and PULSE_FCM_CREDENTIALS_FILE",
    ):
        assert variable in message
    assert "SMTP" not in message and "TWILIO" not in message  # the push worker uses neither
    assert "guest" not in message.replace("PULSE_", "")  # names settings, shows no values


def test_in_production_each_setting_set_lets_every_service_start(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, PRODUCTION)
    for cls in (ApiSettings, SmsWorkerSettings, PushWorkerSettings):
        assert sandbox_defaults_kept(cls()) == []
    monkeypatch.setenv("PULSE_SMTP_PORT", "1025")  # the sandbox's port, but another host: a relay of yours
    assert sandbox_defaults_kept(load_settings(ApiSettings, "api")) == []


def test_guest_credentials_are_refused_however_the_broker_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, PRODUCTION)
    monkeypatch.setenv("PULSE_BROKER_URL", "amqp://guest:guest@rabbitmq:5672//")
    assert sandbox_defaults_kept(ApiSettings()) == [
        "PULSE_BROKER_USER and PULSE_BROKER_PASSWORD are still the development default: set a RabbitMQ "
        "user of your own (PULSE_BROKER_URL, or PULSE_BROKER_USER and PULSE_BROKER_PASSWORD)"
    ]
    monkeypatch.delenv("PULSE_BROKER_URL")
    monkeypatch.setenv("PULSE_BROKER_HOST", "rabbitmq")  # the user and password from the default URL
    assert len(sandbox_defaults_kept(ApiSettings())) == 1


def test_a_sandbox_secondary_is_refused_under_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, PRODUCTION)
    monkeypatch.setenv("PULSE_TWILIO_SECONDARY__BASE_URL", "http://127.0.0.1:8025")
    monkeypatch.setenv("PULSE_TWILIO_SECONDARY__ACCOUNT_SID", "AC" + "8" * 32)
    [kept] = sandbox_defaults_kept(SmsWorkerSettings())
    assert kept.startswith("PULSE_TWILIO_SECONDARY__BASE_URL is still the development default")
    monkeypatch.setenv("PULSE_TWILIO_SECONDARY__BASE_URL", "https://api.twilio.com")
    assert sandbox_defaults_kept(SmsWorkerSettings()) == []


def test_the_development_jwt_secret_is_refused_where_end_user_tokens_are_signed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set(monkeypatch, PRODUCTION)
    monkeypatch.delenv("PULSE_JWT_SECRET")
    assert sandbox_defaults_kept(ApiSettings()) == [
        "PULSE_JWT_SECRET is still the development default: set a random secret of 32 characters or more"
    ]
    assert sandbox_defaults_kept(SmsWorkerSettings()) == []  # a worker signs no tokens


def test_in_development_the_defaults_are_fine(tmp_path: Path) -> None:
    assert sandbox_defaults_kept(ApiSettings()) != []  # they are there...
    load_settings(ApiSettings, "api")  # ...and allowed


def test_the_database_url_is_built_from_its_parts_with_escaping(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(
        monkeypatch,
        {
            "PULSE_DATABASE_HOST": "db.internal",
            "PULSE_DATABASE_PORT": "6543",
            "PULSE_DATABASE_USER": "pulse",
            "PULSE_DATABASE_PASSWORD": "p@ss/w:rd%",
            "PULSE_DATABASE_NAME": "pulse_prod",
        },
    )
    settings = DatabaseSettings()
    url = make_url(settings.url)
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "db.internal",
        6543,
        "pulse",
        "p@ss/w:rd%",
        "pulse_prod",
    )
    assert "p@ss" not in repr(settings) and "p@ss" not in settings.masked_url
    monkeypatch.delenv("PULSE_DATABASE_PORT")
    monkeypatch.delenv("PULSE_DATABASE_NAME")
    defaulted = make_url(DatabaseSettings().url)  # the parts not given are the default URL's
    assert (defaulted.port, defaulted.database) == (5432, "pulse")


def test_the_broker_url_is_built_from_its_parts_as_kombu_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(
        monkeypatch,
        {
            "PULSE_BROKER_HOST": "mq.internal",
            "PULSE_BROKER_USER": "pulse",
            "PULSE_BROKER_PASSWORD": "p@ss/w:rd%",
            "PULSE_BROKER_VHOST": "pulse/prod",
        },
    )
    settings = BrokerSettings()
    connection = Connection(settings.url)
    assert (connection.hostname, connection.port, connection.userid, connection.password) == (
        "mq.internal",
        5672,
        "pulse",
        "p@ss/w:rd%",
    )
    assert connection.virtual_host == "pulse/prod"
    assert "p@ss" not in repr(settings)


def test_a_url_given_whole_shows_its_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_BROKER_URL", "amqp://pulse:mq%2Fsecret@mq.internal:5673/pulse")
    broker = BrokerSettings()
    assert (broker.host, broker.port, broker.user, broker.vhost) == ("mq.internal", 5673, "pulse", "pulse")
    assert broker.password is not None and broker.password.get_secret_value() == "mq/secret"
    assert (DatabaseSettings().user, DatabaseSettings().password) == ("postgres", None)  # the default URL


def test_a_url_and_its_parts_together_are_a_clear_error(tmp_path: Path) -> None:
    environment = {
        "PULSE_DATABASE_URL": "postgresql+psycopg://pulse@db/pulse",
        "PULSE_DATABASE_PASSWORD": "hunter2-very-secret",
    }
    started = _start("services.scheduler", environment, tmp_path)
    assert started.returncode != 0
    message = started.stderr.strip()
    assert "Traceback" not in message and "\n" not in message
    assert "PULSE_DATABASE_URL and PULSE_DATABASE_PASSWORD are both set" in message
    assert "hunter2-very-secret" not in message


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("PULSE_DATABASE_URL", "PULSE_DATABASE_URL is not a URL"),
        ("PULSE_BROKER_URL", "PULSE_BROKER_URL is not an AMQP URL"),
    ],
)
def test_a_url_that_is_not_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, message: str
) -> None:
    monkeypatch.setenv(variable, "db.internal:5432")
    with pytest.raises(ValidationError, match=message):
        ApiSettings()
