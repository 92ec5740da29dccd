"""pulse-admin's API key commands: issue, list, revoke and check; issuing and revoking are audited."""

import argparse
from datetime import datetime

from sqlalchemy.orm import Session

from pulse.audit.service import Operator, record_change
from pulse.errors import NotFound
from pulse.tenants.schemas import ApiKeyOut
from pulse.tenants.service import (
    find_principal,
    issue_api_key,
    list_api_keys,
    parse_scopes,
    revoke_api_key,
    tenant_named,
)


def issue(session: Session, args: argparse.Namespace) -> str:
    """The new key, alone on the last line."""
    tenant = tenant_named(session, args.tenant)
    key, row = issue_api_key(
        session,
        tenant_id=tenant.id,
        scopes=parse_scopes(args.scopes),
        name=args.name,
        expires_at=args.expires_at,
    )
    record_change(
        session, Operator(tenant.id), "api_key.create", "api_key", row.id, after=ApiKeyOut.model_validate(row)
    )
    return key


def listing(session: Session, args: argparse.Namespace) -> str:
    """One line per key, oldest first; `-` where a time is unset; the name last (it may hold spaces)."""
    columns = ("created at", "expires at", "last used at", "revoked at")
    lines = [f"{'prefix':10}  {'scopes':16}  " + "".join(f"{column:27}" for column in columns) + "name"]
    for key in list_api_keys(session, tenant_name=args.tenant):
        times = (key.created_at, key.expires_at, key.last_used_at, key.revoked_at)
        lines.append(
            f"{key.prefix:10}  {','.join(key.scopes):16}  "
            + "".join(f"{_moment(moment):27}" for moment in times)
            + (key.name or "")
        )
    return "\n".join(line.rstrip() for line in lines)


def revoke(session: Session, args: argparse.Namespace) -> str:
    revoked = revoke_api_key(session, tenant_name=args.tenant, prefix=args.prefix)
    record_change(
        session,
        Operator(revoked.tenant_id),
        "api_key.revoke",
        "api_key",
        revoked.id,
        after=ApiKeyOut.model_validate(revoked),
    )
    return f"revoked {revoked.prefix}"


def check(session: Session, key: str) -> str:
    principal = find_principal(session, key=key)
    if principal is None:
        raise NotFound("no such API key (unknown or revoked)")
    if principal.expired():
        raise NotFound("this API key has expired")
    return f"tenant {principal.tenant_name}, scopes {','.join(sorted(principal.scopes))}"


def _moment(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"
