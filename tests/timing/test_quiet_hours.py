"""Quiet hours across time zones, midnight and DST transitions (dates checked with zoneinfo)."""

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from pulse.timing.clock import to_instant
from pulse.timing.quiet_hours import QuietHours

NIGHT = QuietHours(time(22), time(8))
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22:00-08:00", QuietHours(time(22), time(8))),
        (" 12:00:00 - 12:00:05 ", QuietHours(time(12), time(12, 0, 5))),
        ("off", None),
        ("OFF", None),
    ],
)
def test_windows_parse_from_text(text: str, expected: QuietHours | None) -> None:
    assert QuietHours.parse(text) == expected


@pytest.mark.parametrize("text", ["", "22:00", "25:00-08:00", "22:00-08:00-09:00", "08:00-08:00", "night"])
def test_malformed_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="quiet hours"):
        QuietHours.parse(text)


@pytest.mark.parametrize(
    ("moment", "zone", "expected"),
    [
        # Outside the window: unchanged.
        (utc(2026, 6, 10, 12, 0), BERLIN, utc(2026, 6, 10, 12, 0)),
        # 23:30 in Berlin (CEST, UTC+2) → 08:00 the next morning.
        (utc(2026, 6, 10, 21, 30), BERLIN, utc(2026, 6, 11, 6, 0)),
        # 03:00 in Berlin → 08:00 the same morning.
        (utc(2026, 6, 11, 1, 0), BERLIN, utc(2026, 6, 11, 6, 0)),
        # The window's bounds: 22:00 is inside, 08:00 is outside.
        (utc(2026, 6, 10, 20, 0), BERLIN, utc(2026, 6, 11, 6, 0)),
        (utc(2026, 6, 11, 6, 0), BERLIN, utc(2026, 6, 11, 6, 0)),
        # The same instant is day time in New York and night in Tokyo.
        (utc(2026, 6, 10, 14, 0), NEW_YORK, utc(2026, 6, 10, 14, 0)),
        (utc(2026, 6, 10, 14, 0), TOKYO, utc(2026, 6, 10, 23, 0)),
    ],
)
def test_a_night_window_defers_to_its_end_in_the_recipient_s_zone(
    moment: datetime, zone: ZoneInfo, expected: datetime
) -> None:
    assert NIGHT.next_allowed_send_time(moment, zone) == expected


def test_a_window_within_one_day_does_not_wrap() -> None:
    lunch = QuietHours(time(12), time(14))
    assert lunch.next_allowed_send_time(utc(2026, 6, 10, 12, 30), UTC) == utc(2026, 6, 10, 14, 0)
    assert lunch.next_allowed_send_time(utc(2026, 6, 10, 23, 0), UTC) == utc(2026, 6, 10, 23, 0)


def test_a_window_ending_in_a_spring_forward_gap_ends_when_the_gap_does() -> None:
    # New York, 2026-03-08: clocks jump from 02:00 EST to 03:00 EDT; 02:30 never happens.
    window = QuietHours(time(1), time(2, 30))
    assert window.next_allowed_send_time(utc(2026, 3, 8, 6, 15), NEW_YORK) == utc(2026, 3, 8, 7, 0)


def test_a_night_window_on_the_night_of_spring_forward_ends_at_8_local() -> None:
    # 23:00 EST on Mar 7 → 08:00 EDT on Mar 8 (UTC-4): 9 hours later by the clock, 8 in real time.
    assert NIGHT.next_allowed_send_time(utc(2026, 3, 8, 4, 0), NEW_YORK) == utc(2026, 3, 8, 12, 0)


def test_a_window_ending_in_a_fall_back_hour_ends_at_its_first_occurrence() -> None:
    # New York, 2026-11-01: 01:00-02:00 happens twice (EDT, then EST). 01:30 first comes at 05:30 UTC.
    window = QuietHours(time(0), time(1, 30))
    assert window.next_allowed_send_time(utc(2026, 11, 1, 4, 30), NEW_YORK) == utc(2026, 11, 1, 5, 30)


def test_a_night_window_on_the_night_of_fall_back_ends_at_8_local() -> None:
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET. 23:00 CEST on Oct 24 → 08:00 CET (07:00 UTC).
    assert NIGHT.next_allowed_send_time(utc(2026, 10, 24, 21, 0), BERLIN) == utc(2026, 10, 25, 7, 0)


def test_wall_times_become_instants_through_dst() -> None:
    assert to_instant(datetime(2026, 3, 8, 2, 30), NEW_YORK) == utc(2026, 3, 8, 7, 0)  # gap
    assert to_instant(datetime(2026, 11, 1, 1, 30), NEW_YORK) == utc(2026, 11, 1, 5, 30)  # repeated
    assert to_instant(datetime(2026, 7, 1, 9, 0), TOKYO) == utc(2026, 7, 1, 0, 0)
