"""`pulse-admin webhook-secret TENANT [--rotate]`, in-process against the test database."""

import base64
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.admin.cli import main
from pulse.db import transaction
from pulse.db.models import Tenant
from pulse.webhooks.secrets import signing_secrets


@pytest.fixture(autouse=True)
def _environment(infrastructure: Infrastructure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", infrastructure.database_url)
    monkeypatch.setenv("PULSE_BROKER_URL", infrastructure.broker_url)


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_the_secret_is_created_once_then_rotated(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
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
    # The replaced secret is kept, for the grace period's second signature.
    with transaction(session_factory) as session:
        tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == name)).one()
        kept = signing_secrets(session, tenant_id)
    assert (kept.current, kept.previous) == (rotated, secret)
    assert kept.rotated_at is not None
    assert kept.signing(now=kept.rotated_at + timedelta(hours=23), grace=timedelta(hours=24)) == [
        rotated,
        secret,
    ]
    assert kept.signing(now=kept.rotated_at + timedelta(hours=24), grace=timedelta(hours=24)) == [rotated]


def test_an_unknown_tenant_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook-secret", "no-such-tenant"]) == 2
    assert "does not exist" in capsys.readouterr().err
