"""Each tenant's webhook signing secret: created lazily, rotated on request.

The format is Standard Webhooks': `whsec_` + base64 of 24 random bytes, which every Standard
Webhooks library (and Svix's) accepts as is.
"""

import base64
import secrets
import uuid

from sqlalchemy import select, update
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


def rotate_secret(session: Session, tenant_id: uuid.UUID) -> str:
    """Replace the tenant's secret; deliveries signed from now on use the new one."""
    secret = new_secret()
    updated = session.execute(
        update(Tenant).where(Tenant.id == tenant_id).values(webhook_secret=secret).returning(Tenant.id)
    ).first()
    if updated is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    return secret
