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

import threading
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

from ..config import SlaConfig

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


class WorkingCalendar(Protocol):
    """What the SLA clock needs from a calendar."""

    def is_working_time(self, moment: datetime) -> bool: ...

    def is_working_day(self, day: date) -> bool: ...

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime: ...

    def subtract_working_minutes(self, end: datetime, minutes: int) -> datetime: ...

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

    def subtract_working_minutes(self, end: datetime, minutes: int) -> datetime:
        return _aware(end).astimezone(timezone.utc) - minutes * MINUTE

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
        import holidays  # 0.15 s with its countries: when a calendar is built (make_calendar)

        self._calendar = holidays.country_holidays(country)
        self._working_days: dict[date, bool] = {}
        self._windows: dict[date, tuple[datetime, datetime] | None] = {}
        self._origin: date | None = None  # _sums[i]: working time before the day origin + i
        self._sums: list[timedelta] = []
        self._sums_lock = threading.Lock()  # the calendar is shared by the daemon's threads

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
            day += DAY

    def subtract_working_minutes(self, end: datetime, minutes: int) -> datetime:
        """The latest moment with ``minutes`` working minutes from it to ``end``."""
        if minutes < 0:
            raise ValueError("minutes must not be negative")
        cursor = _aware(end).astimezone(timezone.utc)
        remaining = minutes * MINUTE
        day = cursor.astimezone(self.tz).date()
        while True:
            window = self._window(day)
            if window is not None and cursor > window[0]:
                cursor = min(cursor, window[1])
                if remaining <= cursor - window[0]:
                    return cursor - remaining
                remaining -= cursor - window[0]
            day -= DAY

    def working_minutes_between(self, a: datetime, b: datetime) -> int:
        """Working minutes from ``a`` to ``b`` (negative when ``b`` is earlier)."""
        if _aware(b) < _aware(a):
            return -self.working_minutes_between(b, a)
        first, last = a.astimezone(self.tz).date(), b.astimezone(self.tz).date()
        total = self._part(first, a, b)
        if last > first:
            total += self._whole_days(first + DAY, last) + self._part(last, a, b)
        return int(total / MINUTE)

    def _part(self, day: date, a: datetime, b: datetime) -> timedelta:
        """Working time on ``day`` between ``a`` and ``b``."""
        window = self._window(day)
        return max(timedelta(), min(b, window[1]) - max(a, window[0])) if window else timedelta()

    def _whole_days(self, first: date, end: date) -> timedelta:
        """Working time on the days from ``first`` up to ``end`` (not included)."""
        with self._sums_lock:
            if self._origin is None or first < self._origin:
                self._origin, self._sums = first - 400 * DAY, [timedelta()]
            while len(self._sums) <= (end - self._origin).days:
                window = self._window(self._origin + (len(self._sums) - 1) * DAY)
                self._sums.append(self._sums[-1] + (window[1] - window[0] if window else timedelta()))
            return self._sums[(end - self._origin).days] - self._sums[(first - self._origin).days]

    def _window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working hours of ``day`` in UTC, or None on a day off (computed once a day)."""
        if day not in self._windows:
            self._windows[day] = (
                (datetime.combine(day, self.work_start, self.tz).astimezone(timezone.utc),
                 datetime.combine(day, self.work_end, self.tz).astimezone(timezone.utc))
                if self.is_working_day(day) else None)
        return self._windows[day]


_building = threading.Lock()


def make_calendar(sla: SlaConfig, tz: str = "Europe/Moscow") -> WorkingCalendar:
    """The calendar the config asks for, in the service's time zone (built once: it is not
    cheap; a thread that asks while another builds it waits for that one)."""
    with _building:
        return _make_calendar(sla, tz)


@lru_cache(maxsize=8)
def _make_calendar(sla: SlaConfig, tz: str) -> WorkingCalendar:
    if sla.calendar == "24x7":
        return RoundTheClockCalendar()
    return BusinessCalendar(tz, time.fromisoformat(sla.work_start), time.fromisoformat(sla.work_end))


def deadline(level: int, received_at: datetime, calendar: WorkingCalendar,
             sla: SlaConfig = SlaConfig()) -> datetime:
    """When the reaction to an ОП``level`` request received at ``received_at`` is due (UTC)."""
    return calendar.add_working_minutes(received_at, sla.norm(level))


__all__ = ["BusinessCalendar", "RoundTheClockCalendar", "WorkingCalendar", "deadline",
           "make_calendar"]
