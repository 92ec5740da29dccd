"""Storing recipient profiles, and what a send learns from one. Callers own the transaction."""

import uuid
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Text, bindparam, delete, func, literal_column, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.arrays import BinaryArray
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


class Profile(NamedTuple):
    """A recipient profile as sends read it (`find_recipients`): the columns, without an ORM instance's
    bookkeeping, which cost three times the query's own work for a fan-out's chunk of thousands."""

    user_id: str
    email: str | None
    phone: str | None
    push_tokens: list[str]
    timezone: str | None
    quiet_hours: str | None
    locale: str | None
    preferences: dict[str, Any]
    created_at: datetime
    updated_at: datetime


# One array parameter rather than a parameter per user id: a fan-out's chunk has thousands. Joined as a
# table, so that each id is one primary key lookup whatever the planner knows of the table: as
# `user_id = ANY(...)` a generic plan over a table not analyzed yet (profiles just imported) scanned
# every profile of the tenant, comparing each with every id (0.75 s per 1000 of 100,000). Empty
# push tokens and preferences (most profiles') come back as NULL: decoding `{}` from JSON took most
# of the Python time per profile.
_FIND_PROFILES = text(
    """
    SELECT profile.user_id, profile.email, profile.phone, nullif(profile.push_tokens, '{}'),
           profile.timezone, profile.quiet_hours, profile.locale, nullif(profile.preferences, '{}'),
           profile.created_at, profile.updated_at
    FROM unnest(:user_ids) AS wanted (user_id)
    JOIN recipients AS profile ON profile.tenant_id = :tenant_id AND profile.user_id = wanted.user_id
    """
).bindparams(bindparam("user_ids", type_=BinaryArray(Text)))


def find_recipients(session: Session, tenant_id: uuid.UUID, user_ids: Collection[str]) -> dict[str, Profile]:
    """The profiles of those of `user_ids` that have one, by user id, in one query (batch sends)."""
    if not user_ids:
        return {}
    rows = session.execute(_FIND_PROFILES, {"tenant_id": tenant_id, "user_ids": list(set(user_ids))})
    return {
        user_id: Profile(
            user_id, email, phone, push_tokens or [], zone, quiet_hours, locale, preferences or {}, *times
        )
        for user_id, email, phone, push_tokens, zone, quiet_hours, locale, preferences, *times in rows
    }


def address_for(recipient: Recipient | Profile, channel: Channel) -> str | None:
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


def opted_out(recipient: Recipient | Profile, channel: Channel) -> bool:
    """True when the recipient turned `channel` off; a channel the preferences do not name is on."""
    return recipient.preferences.get(channel) is False


def policy_for(recipient: Recipient | Profile, tenant: TenantPolicy) -> TenantPolicy:
    """The tenant's policy with the time zone and quiet hours the profile sets (`off`: none) instead."""
    if recipient.timezone is None and recipient.quiet_hours is None:
        return tenant  # What most profiles give; `replace` costs more than the rest of a send's planning.
    quiet_hours = (
        tenant.quiet_hours if recipient.quiet_hours is None else QuietHours.parse(recipient.quiet_hours)
    )
    return replace(tenant, timezone=recipient.timezone or tenant.timezone, quiet_hours=quiet_hours)
