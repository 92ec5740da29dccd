"""Quiet hours: a daily window of local time in which non-critical notifications wait.

Windows may cross midnight (22:00-08:00) and may name seconds (12:00:00-12:00:05, handy in tests).
Membership is judged on the recipient's wall clock; the window's end is turned into an instant with
pulse.timing.clock, so an end that a DST change skips or repeats behaves sensibly.
"""

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from pulse.timing.clock import to_instant

OFF = "off"


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> "QuietHours | None":
        """`HH:MM[:SS]-HH:MM[:SS]`, or `off` (None). Raises ValueError for anything else."""
        if text.strip().lower() == OFF:
            return None
        try:
            start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError as error:
            raise ValueError(f"quiet hours must look like 22:00-08:00 (or be 'off'), not {text!r}") from error
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError("quiet hours are local wall-clock times: no UTC offset")
        if start == end:
            raise ValueError("quiet hours must not start and end at the same time")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start.isoformat()}-{self.end.isoformat()}"

    def contains(self, wall_time: time) -> bool:
        if self.start < self.end:
            return self.start <= wall_time < self.end
        return wall_time >= self.start or wall_time < self.end  # Crosses midnight.

    def next_allowed_send_time(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """`moment` itself when it falls outside the window, else the instant the window ends."""
        wall = moment.astimezone(zone)
        if not self.contains(wall.time().replace(tzinfo=None)):
            return moment
        end_day = wall.date()
        if self.start > self.end and wall.time().replace(tzinfo=None) >= self.start:
            end_day += timedelta(days=1)  # Evening part of a window that ends tomorrow morning.
        return to_instant(datetime.combine(end_day, self.end), zone)
