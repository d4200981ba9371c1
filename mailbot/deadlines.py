"""The SLA clocks: which deadlines are near or passed (DESIGN.md §6; docs/workflow.md, "The SLA clock").

Read only. The scheduler asks :meth:`Deadlines.due_steps` which steps of which
clocks' ladders are due now, and ``workflow/sla.py`` takes them (mail, events);
a supervisors' digest lists :meth:`Deadlines.watched`, everything overdue or due
within the digest's horizon.

A clock runs on a request from its start to its deadline, in working minutes of
the ``[sla]`` calendar; a deadline and its ladder are one *cycle*:

============  ==============================================  ===================  ==========================
clock         runs while (start)                               deadline             ladder
============  ==============================================  ===================  ==========================
reaction      the customer waits for a human reaction          ``requests.due_at``  warning, breach, escalation
              (``requests.waiting_since``: opened, reopened)   (the level's norm)
op4_answer    an ОП4 escalation is unanswered (``sent_at``)    ``escalations.due_at`` warning, breach, escalation
delivery      an ОП2 delivery is unconfirmed (``created_at``)  + delivery_confirm   breach, escalation
confirmation  a solution awaits confirmation (``resolved_at``) + confirm_overdue    reminder, breach
contact_info  contact details are asked for (``received_at``)  + contact_info_wait  breach
============  ==============================================  ===================  ==========================

The warning comes when ``sla.warn_share`` of the time to the deadline has passed,
the customer's reminder ``sla.confirm_remind`` after the solution, the breach at
the deadline, the escalation ``sla.escalate_after`` after it. When several steps
are due at once (the daemon was down), only the latest is taken: those it
supersedes would be noise. Each scan reads the rows its clock runs on through a
partial index and leaves out cycles whose last step is taken.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from .config import SlaConfig
from .sla import WorkingCalendar

LADDERS: dict[str, tuple[str, ...]] = {
    "reaction": ("warning", "breach", "escalation"),
    "op4_answer": ("warning", "breach", "escalation"),
    "delivery": ("breach", "escalation"),
    "confirmation": ("reminder", "breach"),
    "contact_info": ("breach",),
}
CLOCKS = tuple(LADDERS)


@dataclass(frozen=True)
class Running:
    """One cycle of a clock on a request: from ``start`` to the deadline ``due``."""

    clock: str
    request_id: int
    start: datetime
    due: datetime
    done: frozenset[str] = field(default=frozenset(), compare=False)  # steps taken in this cycle
    source_id: int | None = field(default=None, compare=False)  # the escalation or delivery


@dataclass(frozen=True)
class DueStep:
    """A step of a ladder whose time has come and that nobody has taken yet."""

    running: Running
    step: str
    at: datetime  # when it was due


# Each clock's rows: request, start, deadline (NULL: counted from the start by the config),
# the escalation or delivery, and the steps taken in the cycle. {where} narrows to what a
# scan or a digest wants; the deadline columns of reaction and op4_answer are in the cycle key.
_ROWS = {
    "reaction": """
        SELECT r.id AS request_id, r.waiting_since AS start, r.due_at AS due, NULL::bigint AS source_id,
               ARRAY(SELECT s.step FROM sla_steps s WHERE s.request_id = r.id AND s.clock = 'reaction'
                     AND s.started_at = r.waiting_since AND s.cycle = r.due_at) AS done
        FROM requests r
        WHERE r.waiting_since IS NOT NULL AND r.status IN ('open', 'escalated_op4') AND {where}""",
    "op4_answer": """
        SELECT e.request_id, e.sent_at AS start, e.due_at AS due, e.id AS source_id,
               ARRAY(SELECT s.step FROM sla_steps s WHERE s.request_id = e.request_id
                     AND s.clock = 'op4_answer' AND s.started_at = e.sent_at AND s.cycle = e.due_at) AS done
        FROM escalations e JOIN requests r ON r.id = e.request_id
        WHERE e.status = 'sent' AND e.answered_at IS NULL AND r.status NOT IN ('closed', 'rejected')
          AND {where}""",
    "delivery": """
        SELECT d.request_id, d.created_at AS start, NULL::timestamptz AS due, d.id AS source_id,
               ARRAY(SELECT s.step FROM sla_steps s WHERE s.request_id = d.request_id
                     AND s.clock = 'delivery' AND s.started_at = d.created_at) AS done
        FROM deliveries d JOIN requests r ON r.id = d.request_id
        WHERE d.status = 'sent' AND r.status NOT IN ('closed', 'rejected') AND {where}""",
    "confirmation": """
        SELECT r.id AS request_id, r.resolved_at AS start, NULL::timestamptz AS due, NULL::bigint AS source_id,
               ARRAY(SELECT s.step FROM sla_steps s WHERE s.request_id = r.id
                     AND s.clock = 'confirmation' AND s.started_at = r.resolved_at) AS done
        FROM requests r
        WHERE r.status = 'resolved' AND r.resolved_at IS NOT NULL AND {where}""",
    "contact_info": """
        SELECT r.id AS request_id, r.received_at AS start, NULL::timestamptz AS due, NULL::bigint AS source_id,
               ARRAY(SELECT s.step FROM sla_steps s WHERE s.request_id = r.id
                     AND s.clock = 'contact_info' AND s.started_at = r.received_at) AS done
        FROM requests r
        WHERE r.status = 'awaiting_contact_info' AND {where}""",
}
# What a scan reads: rows whose first step may be due (a superset, decided exactly in Python)
# and whose cycle's last step is not taken yet.
_SCAN = {
    "reaction": """r.due_at <= :cutoff AND r.due_at <= CASE r.level WHEN 1 THEN :c1 WHEN 2 THEN :c2
                   WHEN 3 THEN :c3 ELSE :c4 END""",
    "op4_answer": "e.due_at <= :cutoff",
    "delivery": "d.created_at <= :cutoff",
    "confirmation": "r.resolved_at <= :cutoff",
    "contact_info": "r.received_at <= :cutoff",
}
_WATCH = {  # what a digest reads: rows whose deadline may be before :cutoff (a superset)
    "reaction": "r.due_at <= :cutoff",
    "op4_answer": "e.due_at <= :cutoff",
    "delivery": "d.created_at <= :cutoff",
    "confirmation": "r.resolved_at <= :cutoff",
    "contact_info": "r.received_at <= :cutoff",
}
_UNFINISHED = """ AND NOT EXISTS (SELECT 1 FROM sla_steps s WHERE s.request_id = {request}
                  AND s.clock = '{clock}' AND s.started_at = {start} {cycle} AND s.step = '{last}')"""
_KEYS = {  # the columns of _UNFINISHED per clock
    "reaction": ("r.id", "r.waiting_since", "AND s.cycle = r.due_at"),
    "op4_answer": ("e.request_id", "e.sent_at", "AND s.cycle = e.due_at"),
    "delivery": ("d.request_id", "d.created_at", ""),
    "confirmation": ("r.id", "r.resolved_at", ""),
    "contact_info": ("r.id", "r.received_at", ""),
}


class Deadlines:
    """The SLA clocks at one moment (``now``), read from one session."""

    def __init__(self, session: Session, sla: SlaConfig, calendar: WorkingCalendar,
                 now: datetime) -> None:
        self.session, self.sla, self.calendar, self.now = session, sla, calendar, now

    # ------------------------------------------------------------ the ladder

    def deadline(self, clock: str, start: datetime) -> datetime:
        """The deadline of a clock that counts from its start by the config."""
        minutes = {"delivery": self.sla.delivery_confirm, "confirmation": self.sla.confirm_overdue,
                   "contact_info": self.sla.contact_info_wait}[clock]
        return self.calendar.add_working_minutes(start, minutes)

    def step_times(self, running: Running) -> dict[str, datetime]:
        """When each step of the cycle's ladder is due."""
        times = {}
        for step in LADDERS[running.clock]:
            if step == "warning":
                total = self.calendar.working_minutes_between(running.start, running.due)
                times[step] = self.calendar.add_working_minutes(
                    running.start, round(total * self.sla.warn_share))
            elif step == "reminder":
                times[step] = self.calendar.add_working_minutes(running.start, self.sla.confirm_remind)
            elif step == "breach":
                times[step] = running.due
            else:
                times[step] = self.calendar.add_working_minutes(running.due, self.sla.escalate_after)
        return times

    def due_step(self, running: Running) -> DueStep | None:
        """The latest step whose time has come, unless it is taken (earlier ones are superseded)."""
        times = self.step_times(running)
        passed = [step for step in LADDERS[running.clock] if times[step] <= self.now]
        if not passed or passed[-1] in running.done:
            return None
        return DueStep(running, passed[-1], times[passed[-1]])

    # ------------------------------------------------------------ scans

    def due_steps(self) -> list[DueStep]:
        """Every step due now, of every clock (the overdue scan), by deadline."""
        steps = [step for clock in CLOCKS for running in self._scan(clock)
                 if (step := self.due_step(running)) is not None]
        return sorted(steps, key=lambda s: (s.running.due, s.running.request_id, s.running.clock))

    def watched(self, horizon: datetime) -> list[Running]:
        """Every running cycle that is overdue or due by ``horizon``, by deadline."""
        found = [running for clock in CLOCKS
                 for running in self._rows(clock, _WATCH[clock], self._watch_cutoff(clock, horizon))
                 if running.due <= horizon]
        return sorted(found, key=lambda r: (r.due, r.request_id, r.clock))

    def _scan(self, clock: str) -> list[Running]:
        request, start, cycle = _KEYS[clock]
        where = _SCAN[clock] + _UNFINISHED.format(request=request, start=start, cycle=cycle,
                                                  clock=clock, last=LADDERS[clock][-1])
        return self._rows(clock, where, self._scan_cutoffs(clock))

    def _scan_cutoffs(self, clock: str) -> dict[str, Any]:
        """Bounds for the rows whose first step may be due now."""
        add = self.calendar.add_working_minutes
        if clock == "reaction":  # the warning: (1 - warn_share) of the norm before the deadline
            cutoffs = {f"c{level}": add(self.now, self.sla.norm(level)
                                        - round(self.sla.norm(level) * self.sla.warn_share))
                       for level in range(1, 5)}
            return {"cutoff": max(cutoffs.values()), **cutoffs}
        if clock == "op4_answer":  # ТП2's deadline is at most its norm after the warning
            return {"cutoff": add(self.now, self.sla.norm_op4)}
        minutes = {"delivery": self.sla.delivery_confirm, "confirmation": self.sla.confirm_remind,
                   "contact_info": self.sla.contact_info_wait}[clock]
        return {"cutoff": self.now - timedelta(minutes=minutes)}  # working minutes ≥ wall minutes

    def _watch_cutoff(self, clock: str, horizon: datetime) -> dict[str, Any]:
        if clock in ("reaction", "op4_answer"):
            return {"cutoff": horizon}
        minutes = {"delivery": self.sla.delivery_confirm, "confirmation": self.sla.confirm_overdue,
                   "contact_info": self.sla.contact_info_wait}[clock]
        return {"cutoff": horizon - timedelta(minutes=minutes)}

    def _rows(self, clock: str, where: str, params: dict[str, Any]) -> list[Running]:
        rows = self.session.execute(text(_ROWS[clock].format(where=where)), params).all()
        found: dict[Running, Running] = {}
        for row in rows:  # deliveries sent together share one cycle
            due = row.due if row.due is not None else self.deadline(clock, row.start)
            running = Running(clock, row.request_id, row.start, due, frozenset(row.done),
                              row.source_id)
            found.setdefault(running, running)
        return list(found.values())


__all__ = ["CLOCKS", "LADDERS", "Deadlines", "DueStep", "Running"]
