"""Array parameters that psycopg sends in binary.

psycopg dumps a list parameter in the text format (`{a,b}`) by default, in Python, an element at a
time, testing each for quoting: ~2 µs per text or uuid element, most of the Python cost of the
array parameters a fan-out's chunk sends (thousands of user ids, rate-limit subjects, notification
ids). Its binary form costs a fifth of that. Connections made before this module is imported dump
the same lists in text, as before: slower, not different.
"""

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class _BinaryList(list[Any]):
    """A list that psycopg's connections dump as a binary array."""


psycopg.adapters.register_dumper(_BinaryList, ListBinaryDumper)


class BinaryArray(TypeDecorator[list[Any]]):
    """ARRAY (of the type given) for bind parameters, sent in binary. The elements go as they are,
    without SQLAlchemy's per-element pass: give them as psycopg adapts them (str, int, uuid.UUID).
    A decorator, not an ARRAY subclass: SQLAlchemy replaces an ARRAY with its dialect's own."""

    impl = ARRAY
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        return _binary


def _binary(value: Any) -> Any:
    return None if value is None else _BinaryList(value)
