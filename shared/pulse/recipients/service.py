"""Storing recipient profiles, and what a send learns from one. Callers own the transaction."""

import uuid
from collections.abc import Collection
from dataclasses import replace

from sqlalchemy import Text, and_, bindparam, delete, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.models import Recipient
from pulse.errors import NotFound
from pulse.recipients.schemas import RecipientIn
from pulse.timing.policy import TenantPolicy
from pulse.timing.quiet_hours import QuietHours
from pulse.vocabulary import Channel

_PROFILE_FIELDS = ("email", "phone", "push_tokens", "timezone", "quiet_hours", "locale", "preferences")
# PostgreSQL leaves xmax at 0 on a row version an INSERT created; ON CONFLICT DO UPDATE sets it.
_INSERTED = literal_column("xmax") == 0


def put_recipient(
    session: Session, *, tenant_id: uuid.UUID, user_id: str, profile: RecipientIn
) -> tuple[Recipient, bool]:
    """Create or wholly replace the profile (fields `profile` leaves out are cleared), in one
    statement so that concurrent PUTs cannot both create it; True when it was created."""
    values = {name: getattr(profile, name) for name in _PROFILE_FIELDS}
    statement = pg_insert(Recipient).values(tenant_id=tenant_id, user_id=user_id, **values)
    statement = statement.on_conflict_do_update(
        index_elements=[Recipient.tenant_id, Recipient.user_id],
        set_={**{name: statement.excluded[name] for name in _PROFILE_FIELDS}, "updated_at": func.now()},
    )
    recipient, created = session.execute(
        statement.returning(Recipient, _INSERTED),
        # A copy already in the session (read earlier in this transaction) must show the new values.
        execution_options={"populate_existing": True},
    ).one()
    return recipient, created


def get_recipient(session: Session, *, tenant_id: uuid.UUID, user_id: str) -> Recipient:
    recipient = session.get(Recipient, (tenant_id, user_id))
    if recipient is None:
        raise NotFound(f"recipient {user_id!r} not found")
    return recipient


def delete_recipient(session: Session, *, tenant_id: uuid.UUID, user_id: str) -> Recipient:
    """Delete the profile; returns it as it was."""
    deleted = session.scalar(
        delete(Recipient)
        .where(Recipient.tenant_id == tenant_id, Recipient.user_id == user_id)
        .returning(Recipient)
    )
    if deleted is None:
        raise NotFound(f"recipient {user_id!r} not found")
    return deleted


def find_recipients(
    session: Session, tenant_id: uuid.UUID, user_ids: Collection[str]
) -> dict[str, Recipient]:
    """The profiles of those of `user_ids` that have one, by user id, in one query (batch sends)."""
    if not user_ids:
        return {}
    # One array parameter rather than a parameter per user id: a fan-out's chunk has thousands. Joined
    # as a table, so that each id is one primary key lookup whatever the planner knows of the table:
    # as `user_id = ANY(...)` a generic plan over a table not analyzed yet (profiles just imported)
    # scanned every profile of the tenant, comparing each with every id (0.75 s per 1000 of 100,000).
    wanted = (
        func.unnest(bindparam("user_ids", list(set(user_ids)), type_=ARRAY(Text)))
        .table_valued("user_id")
        .render_derived(name="wanted")
    )
    rows = session.scalars(
        select(Recipient).join_from(
            wanted, Recipient, and_(Recipient.tenant_id == tenant_id, Recipient.user_id == wanted.c.user_id)
        )
    )
    return {recipient.user_id: recipient for recipient in rows}


def address_for(recipient: Recipient, channel: Channel) -> str | None:
    """Where a send on `channel` goes for this recipient; None when the profile has no address for it
    (always for webhook, whose URL is the sender's, not the recipient's)."""
    if channel is Channel.EMAIL:
        return recipient.email
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return recipient.phone
    if channel is Channel.PUSH:
        return recipient.push_tokens[0] if recipient.push_tokens else None
    if channel is Channel.INAPP:
        return recipient.user_id
    return None


def opted_out(recipient: Recipient, channel: Channel) -> bool:
    """True when the recipient turned `channel` off; a channel the preferences do not name is on."""
    return recipient.preferences.get(channel) is False


def policy_for(recipient: Recipient, tenant: TenantPolicy) -> TenantPolicy:
    """The tenant's policy with the time zone and quiet hours the profile sets (`off`: none) instead."""
    quiet_hours = (
        tenant.quiet_hours if recipient.quiet_hours is None else QuietHours.parse(recipient.quiet_hours)
    )
    return replace(tenant, timezone=recipient.timezone or tenant.timezone, quiet_hours=quiet_hours)
