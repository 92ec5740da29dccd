"""Device tokens FCM reported dead, per tenant: the push worker records them, the gateway refuses
that tenant's further sends to them. What one tenant's send taught Pulse about a token is that
tenant's business, so other tenants' sends are not affected."""

import logging
import uuid
from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import InvalidPushToken

log = logging.getLogger(__name__)


def invalid_token_recorder(session_factory: sessionmaker[Session]) -> Callable[[uuid.UUID, str, str], None]:
    """The push worker's `on_invalid_token`: remember the token for the tenant (the first report wins)."""

    def record(tenant_id: uuid.UUID, token: str, reason: str) -> None:
        with transaction(session_factory) as session:
            session.execute(
                insert(InvalidPushToken)
                .values(tenant_id=tenant_id, token=token, reason=reason)
                .on_conflict_do_nothing(index_elements=["tenant_id", "token"])
            )
        log.warning(
            "push token reported invalid by FCM (%s); the tenant's further sends are refused",
            reason,
            extra={"tenant": str(tenant_id)},
        )

    return record


def invalidated_tokens(
    session: Session, tenant_id: uuid.UUID, tokens: Collection[str]
) -> dict[str, datetime]:
    """Those of `tokens` FCM reported invalid to the tenant, with when: the gateway refuses them."""
    if not tokens:
        return {}
    rows = session.execute(
        select(InvalidPushToken.token, InvalidPushToken.invalidated_at).where(
            InvalidPushToken.tenant_id == tenant_id, InvalidPushToken.token.in_(tokens)
        )
    )
    return {row.token: row.invalidated_at for row in rows}
