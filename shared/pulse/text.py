"""Checks on text from API callers that PostgreSQL would otherwise turn into server errors."""

from typing import Any

# A pattern for path and query parameters that are looked up in PostgreSQL, which has no NUL.
NO_NUL_CHARACTERS = "^[^\\x00]*$"

Location = tuple[str | int, ...]


def nul_character_location(value: Any) -> Location | None:
    """Where a JSON-like value holds a NUL character (keys and indexes down to it); None if nowhere.
    A key holding one is located at itself."""
    if isinstance(value, str):
        return () if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return (key,)
        inner = nul_character_location(item)
        if inner is not None:
            return (key, *inner)
    return None


def refuse_nul_characters(value: Any) -> None:
    """Raise ValueError naming where a NUL character is: PostgreSQL stores none, in text or JSONB."""
    location = nul_character_location(value)
    if location is not None:
        raise ValueError(nul_characters_refused(location))


def nul_characters_refused(location: Location) -> str:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
    return f"NUL characters (\\u0000) are not accepted{' in ' + path if path else ''}"
