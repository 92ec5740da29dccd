"""`pulse-admin` run in-process against the test database and vhost, configured by environment."""

import io
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.admin.cli import main
from pulse.db import transaction
from pulse.db.models import ApiKey, Tenant
from pulse.tenants.service import Scope, find_principal


@pytest.fixture(autouse=True)
def _environment(infrastructure: Infrastructure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_DATABASE_URL", infrastructure.database_url)
    monkeypatch.setenv("PULSE_BROKER_URL", infrastructure.broker_url)


def _name() -> str:
    return f"cli-{secrets.token_hex(4)}"


def test_init_can_run_again_on_a_prepared_database_and_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert main(["init"]) == 0
    assert capsys.readouterr().out == ""


def test_create_tenant_is_idempotent(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    name = _name()
    assert main(["create-tenant", name]) == 0
    first = capsys.readouterr().out
    assert main(["create-tenant", name]) == 0
    second = capsys.readouterr().out

    assert name in first
    assert first == second  # Same tenant, same id.
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Tenant).where(Tenant.name == name)) == 1


def test_create_api_key_prints_a_working_key_as_the_last_line(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    name = _name()
    assert main(["create-tenant", name]) == 0
    capsys.readouterr()

    assert main(["create-api-key", "--tenant", name, "--scopes", "send,read"]) == 0
    key = capsys.readouterr().out.splitlines()[-1]

    with session_factory() as session:
        principal = find_principal(session, key=key)
        stored_hashes = session.scalars(select(ApiKey.key_hash)).all()
    assert principal is not None
    assert principal.tenant_name == name
    assert principal.scopes == {Scope.SEND, Scope.READ}
    assert key not in stored_hashes  # Only the hash is kept.


def test_each_create_api_key_issues_a_new_key(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    name = _name()
    main(["create-tenant", name])
    keys = []
    for scopes in ("admin", "send"):
        assert main(["create-api-key", "--tenant", name, "--scopes", scopes]) == 0
        keys.append(capsys.readouterr().out.splitlines()[-1])

    assert keys[0] != keys[1]
    with session_factory() as session:
        assert [find_principal(session, key=key).scopes for key in keys] == [  # type: ignore[union-attr]
            {Scope.ADMIN},
            {Scope.SEND},
        ]


def test_create_api_key_for_an_unknown_tenant_exits_2_with_a_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = _name()
    assert main(["create-api-key", "--tenant", name]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert name in output.err
    assert "does not exist" in output.err


def test_create_api_key_with_an_unknown_scope_exits_2_and_issues_nothing(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    name = _name()
    main(["create-tenant", name])
    capsys.readouterr()

    assert main(["create-api-key", "--tenant", name, "--scopes", "send,root"]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert "unknown scope" in output.err
    with session_factory() as session:
        issued = session.scalar(
            select(func.count()).select_from(ApiKey).join(Tenant).where(Tenant.name == name)
        )
    assert issued == 0


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_configure_tenant_sets_and_resets_its_quota(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    name = _name()
    main(["create-tenant", name])
    capsys.readouterr()

    quotas = []
    for value in ("600", "off", "default"):
        assert main(["configure-tenant", name, "--sends-per-minute", value]) == 0
        with session_factory() as session:
            quotas.append(session.scalar(select(Tenant.sends_per_minute).where(Tenant.name == name)))
    output = capsys.readouterr().out

    assert quotas == [600, 0, None]
    assert "quota 600 sends per minute" in output
    assert "quota default (PULSE_TENANT_SENDS_PER_MINUTE)" in output
    assert main(["configure-tenant", name, "--sends-per-minute", "lots"]) == 2
    assert "'lots'" in capsys.readouterr().err


def _issue(capsys: pytest.CaptureFixture[str], tenant: str, scopes: str) -> str:
    assert main(["create-api-key", "--tenant", tenant, "--scopes", scopes]) == 0
    return capsys.readouterr().out.splitlines()[-1]


def test_list_api_keys_shows_prefixes_scopes_and_dates_but_never_the_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, other = _name(), _name()
    for tenant in (name, other):
        main(["create-tenant", tenant])
    capsys.readouterr()
    keys = [_issue(capsys, name, "send"), _issue(capsys, name, "read,admin")]
    stranger = _issue(capsys, other, "send")

    assert main(["list-api-keys", "--tenant", name]) == 0
    listing = capsys.readouterr().out

    for key in keys:
        assert key[:10] in listing
        assert key not in listing and key[10:] not in listing
    assert stranger[:10] not in listing
    rows = listing.splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["send", "admin,read"]  # Oldest first.
    assert all(row.split()[2].startswith("20") for row in rows)  # created_at, ISO 8601.


def test_revoke_api_key_refuses_that_key_only(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    name = _name()
    main(["create-tenant", name])
    capsys.readouterr()
    revoked, kept = _issue(capsys, name, "send"), _issue(capsys, name, "send")

    assert main(["revoke-api-key", "--tenant", name, revoked[:10]]) == 0
    assert revoked[:10] in capsys.readouterr().out

    with session_factory() as session:
        assert find_principal(session, key=revoked) is None
        assert find_principal(session, key=kept) is not None
    assert main(["list-api-keys", "--tenant", name]) == 0
    listing = capsys.readouterr().out
    revoked_at = [row.split()[5] for row in listing.splitlines()[1:]]
    assert revoked_at[0].startswith("20") and revoked_at[1] == "-"

    # Again, a prefix the tenant does not have, or another tenant's key: exit 2, nothing changes.
    other = _name()
    main(["create-tenant", other])
    assert main(["revoke-api-key", "--tenant", name, revoked[:10]]) == 2
    assert main(["revoke-api-key", "--tenant", name, "pk_nothing"]) == 2
    assert main(["revoke-api-key", "--tenant", other, kept[:10]]) == 2
    assert "no active API key" in capsys.readouterr().err
    with session_factory() as session:
        assert find_principal(session, key=kept) is not None


def test_create_api_key_takes_a_name_and_an_expiry_that_list_api_keys_shows(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    name = _name()
    main(["create-tenant", name])
    capsys.readouterr()
    args = ["create-api-key", "--tenant", name, "--scopes", "send", "--name", "nightly export"]

    assert main([*args, "--expires-at", "2099-01-31T09:00:00"]) == 0
    key = capsys.readouterr().out.splitlines()[-1]
    assert main(["list-api-keys", "--tenant", name]) == 0
    header, row = capsys.readouterr().out.splitlines()

    assert header.split()[:2] == ["prefix", "scopes"] and header.endswith("name")
    prefix, scopes, created_at, expires_at, last_used_at, revoked_at, *key_name = row.split()
    assert (prefix, scopes, created_at[:2], expires_at) == (
        key[:10],
        "send",
        "20",
        "2099-01-31T09:00:00+00:00",
    )
    assert (last_used_at, revoked_at, " ".join(key_name)) == ("-", "-", "nightly export")
    with session_factory() as session:
        principal = find_principal(session, key=key)
    assert principal is not None and principal.expires_at == datetime(2099, 1, 31, 9, tzinfo=UTC)


def test_an_expiry_in_the_past_is_refused_and_an_expired_key_fails_its_check(
    capsys: pytest.CaptureFixture[str],
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _name()
    main(["create-tenant", name])
    capsys.readouterr()

    assert main(["create-api-key", "--tenant", name, "--expires-at", "2020-01-01T00:00:00"]) == 2
    assert "expires_at must be in the future" in capsys.readouterr().err

    key = _issue(capsys, name, "send")
    with transaction(session_factory) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.prefix == key[:10])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    monkeypatch.setattr("sys.stdin", io.StringIO(key))
    assert main(["check-api-key"]) == 2
    assert "expired" in capsys.readouterr().err
