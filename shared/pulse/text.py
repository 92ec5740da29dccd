"""Checks on text from API callers that PostgreSQL would otherwise turn into server errors."""

from typing import Any


def refuse_nul_characters(value: Any, path: str = "") -> None:
    """Raise ValueError naming where a NUL character is: PostgreSQL stores none, in text or JSONB."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"NUL characters (\\u0000) are not accepted{' in ' + path if path else ''}")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul_characters(key, path)
            refuse_nul_characters(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_nul_characters(item, f"{path}[{index}]")
