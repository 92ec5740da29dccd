"""A provider account's send-rate limit as operators write it: `14/s`, `600/m`, `1000/h`, optionally
with a burst: `14/s,burst=28`.

The burst is how many sends may go at once after a quiet spell (the bucket's size); by default one
second's worth of the rate, at least 1. Unset (or empty) means unlimited.
"""

import math
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator

_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600}
_SYNTAX = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<unit>[smh])\s*(?:,\s*burst\s*=\s*(?P<burst>\d+)\s*)?$"
)


@dataclass(frozen=True)
class SendRate:
    """At most `per_second` sends per second on average, and `burst` at once."""

    per_second: float
    burst: int

    @classmethod
    def parse(cls, value: str) -> "SendRate":
        match = _SYNTAX.match(value)
        if match is None:
            raise ValueError(f"not a send rate: {value!r} (expected N/s, N/m or N/h, optionally ',burst=B')")
        per_second = float(match["count"]) / _SECONDS_PER_UNIT[match["unit"]]
        if per_second <= 0:
            raise ValueError(f"a send rate must be above zero (unset it for no limit): {value!r}")
        burst = int(match["burst"]) if match["burst"] else max(1, math.ceil(per_second))
        if burst < 1:
            raise ValueError(f"a burst must be at least 1: {value!r}")
        return cls(per_second=per_second, burst=burst)

    def __str__(self) -> str:
        return f"{self.per_second:g}/s,burst={self.burst}"


def _parse(value: object) -> object:
    if isinstance(value, str):
        return SendRate.parse(value) if value.strip() else None
    return value


# A settings field type: read from `14/s`-style text; None (unset or empty) is no limit.
OptionalSendRate = Annotated[SendRate | None, BeforeValidator(_parse)]
