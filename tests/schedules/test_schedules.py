"""When recurring schedules fire: cron on a zone's wall clock, across DST changes (checked with zoneinfo).

2026's transitions: New York springs forward on 8 March (02:00 EST → 03:00 EDT, 07:00 UTC) and falls
back on 1 November (02:00 EDT → 01:00 EST, 06:00 UTC); Paris springs forward on 29 March
(02:00 CET → 03:00 CEST, 01:00 UTC).
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pulse.errors import InvalidInput
from pulse.schedules.service import next_run_after, validate_cron


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def runs(cron: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` runs, each computed from the previous one (as the scheduler does when on time)."""
    found = []
    for _ in range(count):
        after = next_run_after(cron, timezone, after)
        found.append(after)
    return found


def test_a_daily_time_that_spring_forward_skips_runs_when_the_gap_ends() -> None:
    # 02:30 does not exist in New York on 8 March: the run is at 03:00 EDT, the first instant after.
    assert runs("30 2 * * *", "America/New_York", utc(2026, 3, 6, 12), 3) == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_a_daily_time_after_the_fall_back_runs_once_at_its_new_offset() -> None:
    assert runs("30 2 * * *", "America/New_York", utc(2026, 10, 30, 12), 3) == [
        utc(2026, 10, 31, 6, 30),  # 02:30 EDT
        utc(2026, 11, 1, 7, 30),  # 02:30 EST
        utc(2026, 11, 2, 7, 30),
    ]


def test_a_daily_time_that_fall_back_repeats_runs_once_at_its_first_occurrence() -> None:
    # 01:30 happens twice in New York on 1 November (EDT, then EST): only the first one runs.
    assert runs("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 2, 6, 30),  # 01:30 EST, the next day
    ]


def test_during_the_repeated_hour_its_times_are_not_run_a_second_time() -> None:
    # 06:00 UTC is 01:00 EST, the second 01:00 of the night: 01:30 already ran (at 05:30 UTC).
    assert next_run_after("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 2, 6, 30)
    assert runs("*/20 1 * * *", "America/New_York", utc(2026, 11, 1, 5, 0), 3) == [
        utc(2026, 11, 1, 5, 20),
        utc(2026, 11, 1, 5, 40),
        utc(2026, 11, 2, 6, 0),  # Not 01:00/01:20/01:40 EST again.
    ]


def test_a_weekly_time_keeps_its_local_hour_across_the_change_to_summer_time() -> None:
    assert runs("0 9 * * MON", "Europe/Paris", utc(2026, 3, 20), 3) == [
        utc(2026, 3, 23, 8),  # 09:00 CET
        utc(2026, 3, 30, 7),  # 09:00 CEST, the day after the change
        utc(2026, 4, 6, 7),
    ]


def test_a_daily_time_in_tokyo_is_the_previous_day_in_utc() -> None:
    assert runs("0 8 * * *", "Asia/Tokyo", utc(2026, 6, 10, 0), 2) == [
        utc(2026, 6, 10, 23),
        utc(2026, 6, 11, 23),
    ]


def test_six_fields_fire_every_second_strictly_after_the_given_instant() -> None:
    assert next_run_after("* * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 0)) == utc(2026, 1, 1, 0, 0, 1)
    half_past = datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    assert next_run_after("* * * * * *", "UTC", half_past) == utc(2026, 1, 1, 0, 0, 1)
    # The trailing field is seconds: at second 30 of every minute.
    assert runs("* * * * * 30", "UTC", utc(2026, 1, 1, 0, 0, 0), 2) == [
        utc(2026, 1, 1, 0, 0, 30),
        utc(2026, 1, 1, 0, 1, 30),
    ]


def test_every_second_across_spring_forward_jumps_the_gap_without_repeating_an_instant() -> None:
    assert runs("* * * * * *", "America/New_York", utc(2026, 3, 8, 6, 59, 58), 3) == [
        utc(2026, 3, 8, 6, 59, 59),  # 01:59:59 EST
        utc(2026, 3, 8, 7, 0, 0),  # 03:00:00 EDT (02:xx does not exist)
        utc(2026, 3, 8, 7, 0, 1),
    ]


def test_the_result_is_in_utc_whatever_the_zone_of_the_given_instant() -> None:
    in_tokyo = utc(2026, 3, 23, 8, 30).astimezone(ZoneInfo("Asia/Tokyo"))
    result = next_run_after("0 9 * * MON", "Europe/Paris", in_tokyo)
    assert result == utc(2026, 3, 30, 7)
    assert result.tzinfo is UTC


@pytest.mark.parametrize("cron", ["0 9 * * MON", "*/5 * * * *", "* * * * * *", "0 0 1 1 * 30", "@daily"])
def test_five_or_six_fields_are_accepted(cron: str) -> None:
    validate_cron(cron, "Europe/Paris")


@pytest.mark.parametrize(
    "cron",
    ["", "bad", "* * * *", "61 * * * *", "*/0 * * * *", "* * * * * * 2026", "0 25 * * *", "@sometimes"],
)
def test_malformed_cron_expressions_are_refused_at_the_cron_field(cron: str) -> None:
    with pytest.raises(InvalidInput, match="cron") as refused:
        validate_cron(cron, "UTC")
    assert refused.value.location == ("body", "cron")


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "", "CEST", "../etc/passwd"])
def test_unknown_time_zones_are_refused_at_the_timezone_field(timezone: str) -> None:
    with pytest.raises(InvalidInput, match="time zone") as refused:
        validate_cron("0 9 * * *", timezone)
    assert refused.value.location == ("body", "timezone")
