"""The before/after diff of an audit entry: only what changed, no secrets, every value bounded."""

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json, to_jsonable_python

from pulse.observability.logging import redact_url

REDACTED = "[redacted]"
# A field whose name holds one of these never has its value logged (API keys, webhook secrets,
# passwords, device tokens).
SECRET_NAMES = ("secret", "password", "token", "api_key", "key_hash", "authorization", "credential")
MAX_TEXT = 200
MAX_ITEMS = 20
MAX_DEPTH = 4
# Beyond this as JSON, an entry keeps only the names of the fields that changed.
MAX_BYTES = 16 * 1024

Snapshot = BaseModel | Mapping[str, Any] | None


def diff(before: Snapshot, after: Snapshot) -> dict[str, Any] | None:
    """`{"before": {...}, "after": {...}}` with the fields that differ (all of them on a creation or a
    deletion, where one side is None); None when there is neither side. Over MAX_BYTES even once
    bounded: `{"changed": [field names], "truncated": true}`."""
    old, new = _plain(before), _plain(after)
    if old is not None and new is not None:
        changed = {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
        old = {name: value for name, value in old.items() if name in changed}
        new = {name: value for name, value in new.items() if name in changed}
    sides = {"before": old, "after": new}
    bounded = {side: _bounded(values, 0) for side, values in sides.items() if values is not None}
    if len(to_json(bounded)) <= MAX_BYTES:
        return bounded or None
    names = sorted({_text(str(name)) for values in sides.values() if values for name in values})
    return {"changed": names[:MAX_ITEMS], "truncated": True}


def _plain(snapshot: Snapshot) -> dict[str, Any] | None:
    # Dates, ids and enums as JSON has them.
    return None if snapshot is None else dict(to_jsonable_python(snapshot))


def _bounded(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())
        bounded = {
            _text(str(name)): REDACTED if _secret(str(name)) else _bounded(item, depth + 1)
            for name, item in items[:MAX_ITEMS]
        }
        if len(items) > MAX_ITEMS:
            bounded["…"] = f"{len(items) - MAX_ITEMS} more"
        return bounded
    if isinstance(value, list | tuple):
        kept = [_bounded(item, depth + 1) for item in value[:MAX_ITEMS]]
        return [*kept, f"… {len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else kept
    if isinstance(value, str):
        # Webhook and callback URLs may carry `user:password@` or a `?token=`.
        return _text(redact_url(value) if value.startswith(("http://", "https://")) else value)
    return value


def _secret(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_NAMES)


def _text(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"
