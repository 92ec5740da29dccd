"""Each tenant's webhook signing secret: created lazily, rotated on request.

The format is Standard Webhooks': `whsec_` + base64 of 24 random bytes, which every Standard
Webhooks library (and Svix's) accepts as is. A rotation keeps the secret it replaces, and when: for a
grace period deliveries are signed with both (Standard Webhooks allows several signatures), so that
receivers switch to the new secret without refusing a delivery meanwhile.
"""

import base64
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pulse.db.models import Tenant
from pulse.errors import NotFound

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def get_secret(session: Session, tenant_id: uuid.UUID) -> str:
    """The tenant's secret, created now if it has none (concurrent callers get the same one)."""
    secret = session.scalar(select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
    if secret is not None:
        return secret
    # Only sets it if still unset: two racing first calls agree on the first writer's secret.
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id, Tenant.webhook_secret.is_(None))
        .values(webhook_secret=new_secret())
    )
    secret = session.scalar(select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
    if secret is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    return secret


@dataclass(frozen=True)
class SigningSecrets:
    """A tenant's secret, and the one its latest rotation replaced."""

    current: str
    previous: str | None = None
    rotated_at: datetime | None = None

    def signing(self, *, now: datetime, grace: timedelta) -> list[str]:
        """The secrets a delivery made `now` is signed with, the current one first."""
        if self.previous is not None and self.rotated_at is not None and now < self.rotated_at + grace:
            return [self.current, self.previous]
        return [self.current]


def signing_secrets(session: Session, tenant_id: uuid.UUID) -> SigningSecrets:
    current = get_secret(session, tenant_id)
    previous, rotated_at = session.execute(
        select(Tenant.previous_webhook_secret, Tenant.webhook_secret_rotated_at).where(Tenant.id == tenant_id)
    ).one()
    return SigningSecrets(current, previous, rotated_at)


def rotate_secret(session: Session, tenant_id: uuid.UUID) -> str:
    """Replace the tenant's secret; deliveries signed from now on use the new one (and, for the grace
    period, the replaced one too; a second rotation within it ends the grace of the first's)."""
    secret = new_secret()
    updated = session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(
            webhook_secret=secret,
            previous_webhook_secret=Tenant.webhook_secret,
            webhook_secret_rotated_at=func.now(),
        )
        .returning(Tenant.id)
    ).first()
    if updated is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    return secret
