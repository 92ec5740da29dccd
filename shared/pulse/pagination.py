"""Keyset pagination on (created_at, id), newest first: pages stay stable while rows arrive. And the
bound on numbered pages, where a list has them."""

import base64
import uuid
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from pulse.errors import InvalidInput

# The highest page number, so that OFFSET (page - 1) * size stays reasonable (PostgreSQL refuses
# one past a bigint, and a huge one scans for nothing).
MAX_PAGE = 10_000

_Row = TypeVar("_Row")


def encode_cursor(created_at: datetime, id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{id}".encode()).decode()


def after_cursor(cursor: str, created_at: Any, id: Any) -> ColumnElement[bool]:
    """The condition selecting the rows after `cursor` in (created_at DESC, id DESC) order."""
    try:
        text_created_at, text_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        last_created_at, last_id = datetime.fromisoformat(text_created_at), uuid.UUID(text_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput("cursor is not one this API returned", location=("query", "cursor")) from error
    return or_(created_at < last_created_at, and_(created_at == last_created_at, id < last_id))


def newest_first_page(
    session: Session,
    query: Select[_Row],
    *,
    created_at: InstrumentedAttribute[datetime],
    id: InstrumentedAttribute[uuid.UUID],
    limit: int,
    cursor: str | None,
) -> tuple[list[_Row], str | None]:
    """One page of `query`'s rows after `cursor`, newest first, and the cursor of the next page (None
    on the last)."""
    if cursor is not None:
        query = query.where(after_cursor(cursor, created_at, id))
    rows = list(session.scalars(query.order_by(created_at.desc(), id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(getattr(rows[-1], created_at.key), getattr(rows[-1], id.key))
