"""`pulse-admin webhook-secret TENANT [--rotate]`, in-process against the test database."""

import base64
import secrets

import pytest

from devtools.stack import Infrastructure
from pulse.admin.cli import main


@pytest.fixture(autouse=True)
def _environment(infrastructure: Infrastructure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", infrastructure.database_url)
    monkeypatch.setenv("PULSE_BROKER_URL", infrastructure.broker_url)


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_the_secret_is_created_once_then_rotated(capsys: pytest.CaptureFixture[str]) -> None:
    name = f"cli-{secrets.token_hex(4)}"
    assert main(["create-tenant", name]) == 0
    capsys.readouterr()
    assert main(["webhook-secret", name]) == 0
    secret = _last_line(capsys)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert main(["webhook-secret", name]) == 0
    assert _last_line(capsys) == secret
    assert main(["webhook-secret", name, "--rotate"]) == 0
    rotated = _last_line(capsys)
    assert rotated.startswith("whsec_") and rotated != secret
    assert main(["webhook-secret", name]) == 0
    assert _last_line(capsys) == rotated


def test_an_unknown_tenant_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook-secret", "no-such-tenant"]) == 2
    assert "does not exist" in capsys.readouterr().err
