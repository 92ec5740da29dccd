"""Wall-clock times in a time zone, turned into instants, with DST handled the way people expect.

A local time that does not exist (skipped by a spring-forward) means the first instant after the gap;
a local time that exists twice (repeated by a fall-back) means its first occurrence.
"""

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError, saying what is expected, if there is none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Paris)") from error


def _known_zone_name(name: str) -> str:
    time_zone(name)
    return name


# A request field holding an IANA zone name, checked to exist.
TimeZoneName = Annotated[str, AfterValidator(_known_zone_name)]


def to_instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which clocks in `zone` first show the naive wall time `local` (or later)."""
    first_reading = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first_reading, zone) == local:
        return first_reading  # fold=0 is also the first occurrence of an ambiguous time.
    # In a gap: the wall clock jumps past `local` at the transition, which lies between the two
    # readings of `local` (before- and after-transition offsets). Transitions fall on whole seconds.
    low = int(local.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(first_reading.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= local:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)
