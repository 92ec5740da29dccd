"""scripts/dev-api-key.sh (`make run`): it keeps the dev key and prints the same one at every start."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.admin.cli import main
from pulse.db.models import ApiKey
from pulse.tenants.service import Scope, find_principal

SCRIPT = Path(__file__).parents[2] / "scripts" / "dev-api-key.sh"


def _dev_api_key(key_file: Path) -> str:
    # pulse-admin from this interpreter's environment, against the private database (PULSE_DATABASE_URL).
    env = os.environ | {"DEV_API_KEY_FILE": str(key_file)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [SCRIPT], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_the_dev_key_is_kept_while_it_works_and_replaced_when_it_does_not(
    private: Infrastructure,
    factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in private.env().items():
        monkeypatch.setenv(name, value)
    assert main(["create-tenant", "dev"]) == 0
    key_file = tmp_path / "var" / "dev-api-key"

    first = _dev_api_key(key_file)
    second = _dev_api_key(key_file)

    assert first == second
    assert key_file.read_text().strip() == first
    assert key_file.stat().st_mode & 0o077 == 0  # Only its owner can read it.
    with factory() as session:
        principal = find_principal(session, key=first)
        assert principal is not None
        assert (principal.tenant_name, principal.scopes) == ("dev", {Scope.SEND, Scope.READ, Scope.ADMIN})

    # The stored key no longer works (as after a database reset): a new one replaces it.
    with factory.begin() as session:
        session.execute(update(ApiKey).values(revoked_at=ApiKey.created_at))
    third = _dev_api_key(key_file)

    assert third != first
    assert key_file.read_text().strip() == third
    with factory() as session:
        assert find_principal(session, key=third) is not None
