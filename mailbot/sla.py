"""The SLA clock's calendar and deadlines (DESIGN.md §6).

A reaction norm (ОП1 20 min, ОП2 40 min, ОП3 2 h, ОП4 3 h; ``[sla]`` in the
config) is counted in *working* minutes of a calendar:

- :class:`BusinessCalendar`: working hours (default 09:00–18:00) on the working
  days of the Russian production calendar in the service's time zone (default
  Europe/Moscow). The ``holidays`` package supplies public holidays, the days
  off moved by government decree and the weekend days made working days
  (e.g. Saturday 2025-11-01), so a moved working Saturday counts as working.
- :class:`RoundTheClockCalendar` (``calendar = "24x7"``): every minute counts.

A moment outside working hours starts counting at the next working moment.
Every calendar takes timezone-aware datetimes and returns aware UTC datetimes.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import holidays

from .config import SlaConfig

MINUTE = timedelta(minutes=1)


class WorkingCalendar(Protocol):
    """What the SLA clock needs from a calendar."""

    def is_working_time(self, moment: datetime) -> bool: ...

    def is_working_day(self, day: date) -> bool: ...

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime: ...

    def working_minutes_between(self, a: datetime, b: datetime) -> int: ...


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, got {moment!r}")
    return moment


class RoundTheClockCalendar:
    """24x7: every minute is a working minute."""

    def is_working_time(self, moment: datetime) -> bool:
        _aware(moment)
        return True

    def is_working_day(self, day: date) -> bool:
        return True

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime:
        return _aware(start).astimezone(timezone.utc) + minutes * MINUTE

    def working_minutes_between(self, a: datetime, b: datetime) -> int:
        return int((_aware(b) - _aware(a)) / MINUTE)


class BusinessCalendar:
    """Working hours on the working days of a country's production calendar (Russia by default)."""

    def __init__(self, tz: str = "Europe/Moscow", work_start: time = time(9),
                 work_end: time = time(18), country: str = "RU") -> None:
        if work_start >= work_end:
            raise ValueError("work_start must be earlier than work_end")
        self.tz = ZoneInfo(tz)
        self.work_start, self.work_end = work_start, work_end
        self._calendar = holidays.country_holidays(country)
        self._working_days: dict[date, bool] = {}

    def is_working_day(self, day: date) -> bool:
        """A weekday that is no holiday or moved day off, or a weekend day made a working day."""
        if day not in self._working_days:
            self._working_days[day] = self._calendar.is_working_day(day)
        return self._working_days[day]

    def is_working_time(self, moment: datetime) -> bool:
        local = _aware(moment).astimezone(self.tz)
        return (self.is_working_day(local.date())
                and self.work_start <= local.time() < self.work_end)

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime:
        if minutes < 0:
            raise ValueError("minutes must not be negative")
        cursor = _aware(start).astimezone(timezone.utc)
        remaining = minutes * MINUTE
        day = cursor.astimezone(self.tz).date()
        while True:
            window = self._window(day)
            if window is not None and cursor < window[1]:
                cursor = max(cursor, window[0])
                if remaining <= window[1] - cursor:
                    return cursor + remaining
                remaining -= window[1] - cursor
            day += timedelta(days=1)

    def working_minutes_between(self, a: datetime, b: datetime) -> int:
        """Working minutes from ``a`` to ``b`` (negative when ``b`` is earlier)."""
        if _aware(b) < _aware(a):
            return -self.working_minutes_between(b, a)
        total = timedelta()
        day, last = a.astimezone(self.tz).date(), b.astimezone(self.tz).date()
        while day <= last:
            window = self._window(day)
            if window is not None:
                total += max(timedelta(), min(b, window[1]) - max(a, window[0]))
            day += timedelta(days=1)
        return int(total / MINUTE)

    def _window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working hours of ``day`` in UTC, or None on a day off."""
        if not self.is_working_day(day):
            return None
        return (datetime.combine(day, self.work_start, self.tz).astimezone(timezone.utc),
                datetime.combine(day, self.work_end, self.tz).astimezone(timezone.utc))


@lru_cache(maxsize=8)
def make_calendar(sla: SlaConfig, tz: str = "Europe/Moscow") -> WorkingCalendar:
    """The calendar the config asks for, in the service's time zone (built once: it is not cheap)."""
    if sla.calendar == "24x7":
        return RoundTheClockCalendar()
    return BusinessCalendar(tz, time.fromisoformat(sla.work_start), time.fromisoformat(sla.work_end))


def deadline(level: int, received_at: datetime, calendar: WorkingCalendar,
             sla: SlaConfig = SlaConfig()) -> datetime:
    """When the reaction to an ОП``level`` request received at ``received_at`` is due (UTC)."""
    return calendar.add_working_minutes(received_at, sla.norm(level))


__all__ = ["BusinessCalendar", "RoundTheClockCalendar", "WorkingCalendar", "deadline",
           "make_calendar"]
