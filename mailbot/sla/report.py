"""``mailbot report sla``: how the reaction norms were kept, per level and staff member.

The requests opened in the period (``--from`` … ``--to``: days in the service's
time zone, both included) are counted by their level and assignee:

- *requests*: how many; *answered*: with a first human answer to the customer;
- *met*: the share answered within the level's norm, of those answered or past
  their deadline (a request still within its norm is not judged yet, nor one
  closed unanswered before its deadline);
- *median*, *p90*: the first reaction time, in working minutes of the ``[sla]``
  calendar from the opening (a wait for contact details does not count);
- *breaches*: answered late, or unanswered past the deadline (at the end of the
  period, or now if that is earlier).

ОП4's first reaction is ТП2's answer to the escalation: the ОП4 escalations sent in
the period make the rows of ``ОП4/ТП2``, answered by ``escalations.answered_at``, in
time by its ``due_at``.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..config import Config
from ..parsers.visible import one_line
from .calendar import WorkingCalendar, make_calendar

ALL = "all"
TP2 = "ОП4/ТП2"
COLUMNS = ("level", "staff", "requests", "answered", "met", "median_min", "p90_min", "breaches")


@dataclass(frozen=True)
class Outcome:
    """One request's (or escalation's) first reaction, judged against its deadline."""

    level: str
    staff: str
    minutes: int | None  # working minutes to the first reaction (None: no reaction)
    judged: bool  # answered, or past its deadline
    met: bool


@dataclass(frozen=True)
class Row:
    level: str
    staff: str
    requests: int
    answered: int
    judged: int
    met: int
    median: float | None
    p90: int | None
    breaches: int

    @property
    def met_share(self) -> float | None:
        return self.met / self.judged if self.judged else None


def sla_report(session: Session, config: Config, first: date, last: date,
               now: datetime) -> list[Row]:
    """The report's rows: each level and staff member, each level's total, then the total."""
    tz = ZoneInfo(config.timezone)
    start = datetime.combine(first, time(), tz)
    end = datetime.combine(last + timedelta(days=1), time(), tz)
    calendar = make_calendar(config.sla, config.timezone)
    cutoff = min(end, now)
    outcomes = _requests(session, config, calendar, start, end, cutoff) + \
        _escalations(session, calendar, start, end, cutoff)
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        groups[outcome.level, outcome.staff].append(outcome)
        groups[outcome.level, ALL].append(outcome)
        groups[ALL, ALL].append(outcome)
    order = sorted(groups, key=lambda key: (key[0] == ALL, key[0], key[1] == ALL, key[1]))
    return [_row(level, staff, groups[level, staff]) for level, staff in order]


def _requests(session: Session, config: Config, calendar: WorkingCalendar, start: datetime,
              end: datetime, cutoff: datetime) -> list[Outcome]:
    rows = session.execute(text("""
        SELECT r.level, r.opened_at, r.first_reaction_at, r.closed_at, coalesce(s.login, '-') AS staff
        FROM requests r LEFT JOIN staff s ON s.id = r.assignee_id
        WHERE r.opened_at >= :start AND r.opened_at < :end AND r.level BETWEEN 1 AND 3"""),
        {"start": start, "end": end}).all()
    outcomes = []
    for row in rows:
        due = calendar.add_working_minutes(row.opened_at, config.sla.norm(row.level))
        outcomes.append(_judge(f"ОП{row.level}", row.staff, calendar, row.opened_at, due,
                               row.first_reaction_at, row.closed_at, cutoff))
    return outcomes


def _escalations(session: Session, calendar: WorkingCalendar, start: datetime, end: datetime,
                 cutoff: datetime) -> list[Outcome]:
    rows = session.execute(text("""
        SELECT sent_at, due_at, answered_at FROM escalations
        WHERE sent_at >= :start AND sent_at < :end"""), {"start": start, "end": end}).all()
    return [_judge(TP2, "ТП2", calendar, row.sent_at, row.due_at, row.answered_at, None, cutoff)
            for row in rows]


def _judge(level: str, staff: str, calendar: WorkingCalendar, start: datetime, due: datetime,
           reacted: datetime | None, closed: datetime | None, cutoff: datetime) -> Outcome:
    if reacted is not None:
        return Outcome(level, staff, calendar.working_minutes_between(start, reacted), True,
                       reacted <= due)
    overdue = due <= cutoff and (closed is None or closed > due)
    return Outcome(level, staff, None, overdue, False)


def _row(level: str, staff: str, outcomes: list[Outcome]) -> Row:
    minutes = sorted(o.minutes for o in outcomes if o.minutes is not None)
    judged = [o for o in outcomes if o.judged]
    met = sum(1 for o in judged if o.met)
    return Row(level=level, staff=staff, requests=len(outcomes), answered=len(minutes),
               judged=len(judged), met=met,
               median=statistics.median(minutes) if minutes else None,
               p90=minutes[math.ceil(0.9 * len(minutes)) - 1] if minutes else None,
               breaches=len(judged) - met)


def format_table(rows: list[Row]) -> str:
    """The rows as a terminal table (times in working minutes)."""
    header = ("level", "staff", "requests", "answered", "met", "median", "p90", "breaches")
    lines = [header] + [
        (row.level, one_line(row.staff), str(row.requests), str(row.answered),
         f"{row.met_share:.0%}" if row.met_share is not None else "-",
         f"{row.median:g} min" if row.median is not None else "-",
         f"{row.p90} min" if row.p90 is not None else "-", str(row.breaches))
        for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text_lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(line, widths)))
                  for line in lines]
    text_lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in text_lines)


def format_csv(rows: list[Row]) -> str:
    """The rows as CSV: the share met as a fraction, times in working minutes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow((row.level, one_line(row.staff), row.requests, row.answered,
                         f"{row.met_share:.3f}" if row.met_share is not None else "",
                         f"{row.median:g}" if row.median is not None else "",
                         row.p90 if row.p90 is not None else "", row.breaches))
    return out.getvalue()


__all__ = ["Row", "format_csv", "format_table", "sla_report"]
