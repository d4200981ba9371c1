"""The SLA clocks: which deadlines are near or passed (DESIGN.md §6; docs/workflow.md, "The SLA clock").

Read only. The scheduler asks :meth:`Deadlines.due_steps` which steps of which
clocks' ladders are due now, and ``workflow/ladder.py`` takes them (mail,
events); a supervisors' digest lists :meth:`Deadlines.watched`, everything
overdue or due within the digest's horizon.

A clock runs on a request from its start to its deadline, in working minutes of
the ``[sla]`` calendar; a deadline and its ladder are one *cycle*:

============  ==============================================  =====================  ==========================
clock         runs while (start)                               deadline               ladder
============  ==============================================  =====================  ==========================
reaction      the customer waits for a human reaction          ``requests.due_at``    warning, breach, escalation
              (``requests.waiting_since``: opened, reopened)   (the level's norm)
op4_answer    an ОП4 escalation is unanswered (``sent_at``)    ``escalations.due_at`` warning, breach, escalation
delivery      an ОП2 delivery is unconfirmed (``created_at``)  + delivery_confirm     breach, escalation
confirmation  a solution awaits confirmation (``resolved_at``) + confirm_overdue      reminder, breach
contact_info  contact details are asked for (``received_at``)  + contact_info_wait    breach
============  ==============================================  =====================  ==========================

The warning comes when ``sla.warn_share`` of the time to the deadline has passed,
the customer's reminder ``sla.confirm_remind`` after the solution, the breach at
the deadline, the escalation ``sla.escalate_after`` after it. When several steps
are due at once (the daemon was down), only the latest is taken: those it
supersedes would be noise.

A scan reads each clock's rows through a partial index on one column (the
*key*: the deadline, or the start). Each step comes a number of working minutes
after (or, a warning, before) the key, so the cycles whose step comes between
two moments have their keys between two bounds counted in the calendar. A
running daemon's pass reads, per step, the cycles whose step came since its
previous pass (an OR of index ranges: a handful of rows); a full scan (at start,
then every few minutes) reads every cycle whose next step, after the last one
taken, is due. The steps already taken come with each row (one ``sla_steps``
index lookup); Python decides exactly, with the calendar, for the rows read.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..config import SlaConfig
from .calendar import WorkingCalendar

LADDERS: dict[str, tuple[str, ...]] = {
    "reaction": ("warning", "breach", "escalation"),
    "op4_answer": ("warning", "breach", "escalation"),
    "delivery": ("breach", "escalation"),
    "confirmation": ("reminder", "breach"),
    "contact_info": ("breach",),
}
CLOCKS = tuple(LADDERS)
Bound = Callable[[datetime], datetime]


@dataclass(frozen=True)
class Running:
    """One cycle of a clock on a request: from ``start`` to the deadline ``due``."""

    clock: str
    request_id: int
    start: datetime
    due: datetime
    done: frozenset[str] = field(default=frozenset(), compare=False)  # steps taken in this cycle
    source_id: int | None = field(default=None, compare=False)  # the escalation or delivery
    assignee_id: int | None = field(default=None, compare=False)  # the request's, now


@dataclass(frozen=True)
class DueStep:
    """A step of a ladder whose time has come and that nobody has taken yet."""

    running: Running
    step: str


@dataclass(frozen=True)
class _Source:
    """Where a clock's cycles are: the rows it runs on and the columns that place them."""

    tables: str
    running: str  # while the clock runs: the partial index's condition (and the request open)
    request: str
    start: str
    key: str  # the indexed column: the deadline (when stored) or the start
    due: str = "NULL::timestamptz"  # the stored deadline, if any (it is in the cycle key)
    source: str = "NULL::bigint"

    def query(self, clock: str, where: str) -> str:
        cycle = f"AND s.cycle = {self.due}" if self.due != "NULL::timestamptz" else ""
        ladder = ", ".join(f"'{step}'" for step in LADDERS[clock])
        return f"""
            SELECT {self.request} AS request_id, {self.start} AS start, {self.due} AS due,
                   {self.source} AS source_id, r.assignee_id, t.done, t.deadline
            FROM {self.tables}
            LEFT JOIN LATERAL (
                SELECT array_agg(s.step) AS done, max(s.cycle) AS deadline,
                       max(array_position(ARRAY[{ladder}], s.step)) AS last
                FROM sla_steps s
                WHERE s.request_id = {self.request} AND s.clock = '{clock}'
                  AND s.started_at = {self.start} {cycle}) t ON true
            WHERE {self.running} AND {where.format(key=self.key)}"""


_SOURCES = {
    "reaction": _Source(tables="requests r", request="r.id", start="r.waiting_since",
                        key="r.due_at", due="r.due_at",
                        running="r.waiting_since IS NOT NULL AND r.status IN ('open', 'escalated_op4')"),
    "op4_answer": _Source(tables="escalations e JOIN requests r ON r.id = e.request_id",
                          request="e.request_id", start="e.sent_at", key="e.due_at", due="e.due_at",
                          source="e.id", running="e.status = 'sent' AND e.answered_at IS NULL "
                                                 "AND r.status NOT IN ('closed', 'rejected')"),
    "delivery": _Source(tables="deliveries d JOIN requests r ON r.id = d.request_id",
                        request="d.request_id", start="d.created_at", key="d.created_at",
                        source="d.id",
                        running="d.status = 'sent' AND r.status NOT IN ('closed', 'rejected')"),
    "confirmation": _Source(tables="requests r", request="r.id", start="r.resolved_at",
                            key="r.resolved_at", running="r.status = 'resolved'"),
    "contact_info": _Source(tables="requests r", request="r.id", start="r.received_at",
                            key="r.received_at", running="r.status = 'awaiting_contact_info'"),
}


class Deadlines:
    """The SLA clocks at one moment (``now``), read from one session."""

    def __init__(self, session: Session, sla: SlaConfig, calendar: WorkingCalendar,
                 now: datetime) -> None:
        self.session, self.sla, self.calendar, self.now = session, sla, calendar, now

    # ------------------------------------------------------------ the ladder

    def counted(self, clock: str) -> int:
        """Working minutes from the start to the deadline of a clock counted by the config."""
        return {"delivery": self.sla.delivery_confirm, "confirmation": self.sla.confirm_overdue,
                "contact_info": self.sla.contact_info_wait}[clock]

    def step_time(self, running: Running, step: str) -> datetime:
        """When ``step`` of the cycle's ladder is due."""
        add = self.calendar.add_working_minutes
        if step == "breach":
            return running.due
        if step == "escalation":
            return add(running.due, self.sla.escalate_after)
        if step == "reminder":
            return add(running.start, self.sla.confirm_remind)
        total = self.calendar.working_minutes_between(running.start, running.due)
        return add(running.start, round(total * self.sla.warn_share))

    def due_step(self, running: Running) -> DueStep | None:
        """The latest step whose time has come, unless it is taken (earlier ones are superseded)."""
        for step in reversed(LADDERS[running.clock]):
            if self.step_time(running, step) <= self.now:
                return None if step in running.done else DueStep(running, step)
        return None

    # ------------------------------------------------------------ scans

    def due_steps(self, since: datetime | None = None) -> list[DueStep]:
        """Every step due now, by deadline. With ``since`` (a pass of a running daemon: its
        previous pass, less a margin), only the steps that came due since then."""
        steps = [step for clock in CLOCKS for running in self.scan(clock, since)
                 if (step := self.due_step(running)) is not None]
        return sorted(steps, key=lambda s: (s.running.due, s.running.request_id, s.running.clock))

    def scan(self, clock: str, since: datetime | None = None) -> list[Running]:
        """The cycles of ``clock`` whose next step may be due now; with ``since``, only those
        with a step due between ``since`` and now (the others had theirs taken, or are not due)."""
        arms, params = [], {}
        for n, (position, condition, low_at, high_at) in enumerate(self._keys(clock)):
            params[f"high{n}"] = high_at(self.now)
            if since is None:  # every cycle whose step after the last one taken is due
                arms.append(f"({condition} AND coalesce(t.last, 0) < {position} "
                            f"AND {{key}} <= :high{n})")
            else:  # an OR of index ranges, one per step
                params[f"low{n}"] = low_at(since)
                arms.append(f"({condition} AND {{key}} BETWEEN :low{n} AND :high{n})")
        where = "(" + " OR ".join(arms) + ")"
        if since is None:
            where = "{key} <= :high AND " + where
            params["high"] = max(params.values())
        return self._rows(clock, where, params)

    def watched(self, horizon: datetime) -> list[Running]:
        """Every running cycle that is overdue or due by ``horizon``, by deadline."""
        found = []
        for clock in CLOCKS:
            high = horizon if clock in ("reaction", "op4_answer") else \
                self.calendar.subtract_working_minutes(horizon, self.counted(clock))
            found += [r for r in self._rows(clock, "{key} <= :high", {"high": high})
                      if r.due <= horizon]
        return sorted(found, key=lambda r: (r.due, r.request_id, r.clock))

    def _keys(self, clock: str) -> list[tuple[int, str, Bound, Bound]]:
        """Per step of the ladder (its position, on which rows): the least and the greatest key
        of a cycle whose step comes at a given moment (a later moment, later keys)."""
        sla = self.sla

        def after(minutes: int) -> Bound:  # the step comes ``minutes`` after the key
            return lambda moment: self.calendar.subtract_working_minutes(moment, minutes)

        def before(minutes: int) -> Bound:  # the step comes ``minutes`` before the key
            return lambda moment: self.calendar.add_working_minutes(moment, minutes)

        def at(moment: datetime) -> datetime:
            return moment

        if clock == "reaction":  # the key is the deadline (the level's norm after the start)
            lead = {level: sla.norm(level) - round(sla.norm(level) * sla.warn_share)
                    for level in range(1, 5)}
            return [(1, f"coalesce(r.level, 4) = {level}", before(lead[level]), before(lead[level]))
                    for level in range(1, 5)] + [(2, "true", at, at),
                                                 (3, "true", after(sla.escalate_after),
                                                  after(sla.escalate_after))]
        if clock == "op4_answer":  # ТП2's deadline, at most norm_op4 after the escalation
            return [(1, "true", at, before(sla.norm_op4)), (2, "true", at, at),
                    (3, "true", after(sla.escalate_after), after(sla.escalate_after))]
        offsets = {"delivery": (sla.delivery_confirm, sla.delivery_confirm + sla.escalate_after),
                   "confirmation": (sla.confirm_remind, sla.confirm_overdue),
                   "contact_info": (sla.contact_info_wait,)}[clock]
        return [(n, "true", after(minutes), after(minutes)) for n, minutes in enumerate(offsets, 1)]

    def _rows(self, clock: str, where: str, params: dict[str, Any]) -> list[Running]:
        rows = self.session.execute(text(_SOURCES[clock].query(clock, where)), params).all()
        found: dict[tuple[int, float], Running] = {}
        for row in rows:  # deliveries sent together share one cycle
            key = (row.request_id, row.start.timestamp())
            if key not in found:
                due = row.due or (row.deadline if row.done else None) or \
                    self.calendar.add_working_minutes(row.start, self.counted(clock))
                found[key] = Running(clock, row.request_id, row.start, due,
                                     frozenset(row.done or ()), row.source_id, row.assignee_id)
        return list(found.values())


__all__ = ["CLOCKS", "LADDERS", "Deadlines", "DueStep", "Running"]
