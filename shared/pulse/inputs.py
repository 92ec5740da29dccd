"""Field types for values API callers send, bounded so that whatever is accepted can be stored,
converted and rendered back: an unbounded date or JSON value otherwise fails later, as a 500, possibly
after it was committed."""

import math
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import to_json

EARLIEST_YEAR = 2000
LATEST_YEAR = 2100
MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 64 * 1024

_ISO_8601_DATE = re.compile(r"\d{4}-\d\d-\d\d")


def _iso_8601(value: Any) -> Any:
    # Pydantic would also read a number, or text such as "0.5", as a Unix timestamp.
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_8601_DATE.match(value)):
        return value
    raise ValueError("must be an ISO 8601 date-time, e.g. 2030-01-31T09:00:00Z")


def _supported_year(moment: datetime) -> datetime:
    # Checked on the date as written, before any conversion: reading it at any UTC offset or in any
    # time zone then stays far from the limits of Python's datetime (years 1 to 9999).
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValueError(f"must be in the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    return moment


# Every date-time a caller gives (bodies and query parameters): ISO 8601, years 2000 to 2100.
DateTimeInput = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_supported_year)]


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    _check_nesting(value, depth=1)
    if len(to_json(value)) > MAX_JSON_BYTES:
        raise ValueError(f"is over {MAX_JSON_BYTES // 1024} KiB as JSON")
    return value


def _check_nesting(value: dict[str, Any] | list[Any], *, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nests objects and arrays more than {MAX_JSON_DEPTH} levels deep")
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, dict | list):
            _check_nesting(item, depth=depth + 1)
        elif isinstance(item, float) and not math.isfinite(item):
            # 1e999 parses as Infinity, which JSON (and so PostgreSQL's jsonb) cannot represent.
            raise ValueError("holds a number out of JSON's range (Infinity or NaN)")


# A free-form JSON object from a caller (metadata, template variables, push/webhook data): at most
# 32 levels deep and 64 KiB, so it is stored and serialised back like any other value.
JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_json)]

# A topic's key: letters, digits and `.`, `_`, `:`, `-` (it appears in URLs), starting with a letter
# or digit, at most 128 characters.
TOPIC_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_TOPIC_KEY = 128
TopicKey = Annotated[str, Field(min_length=1, max_length=MAX_TOPIC_KEY, pattern=TOPIC_KEY_PATTERN)]
