"""Taking the SLA clocks' ladder steps: warnings, reminders, breaches, escalations up the chain.

Who is told (docs/workflow.md, "The SLA clock"): the *owner* is the assignee (the
ТП1 group when nobody is assigned); the chain above is the owner's supervisors
(``staff.supervisor_id``, skipping those no longer active), then the heads of
support (``sla.supervisor_addresses``) as its last level.

- warning: the owner (for ТП2's answer to an ОП4 escalation: ТП2 and the owner);
- breach: the owner and the first level of the chain (ТП2 too for an ОП4 answer);
  for a solution the customer has not confirmed, the owner alone; for missing
  contact details, the ТП1 group;
- escalation: the next level of the chain (nobody when there is none);
- reminder: the customer (a solution awaiting their confirmation).

Each step is taken once per request, clock and cycle: its ``sla_steps`` row is
inserted ON CONFLICT DO NOTHING in the transaction that writes its mail and its
event, so a restart, or a second daemon that reaches the same step, sends nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from ..register.models import Delivery, Escalation, Event, Request, SlaStep, Staff
from ..sla.deadlines import DueStep
from .actions import Workflow
from .states import record


@dataclass(frozen=True)
class Taken:
    """A step taken now: which request, clock and step, and who was told."""

    number: str
    clock: str
    step: str
    to: tuple[str, ...]


def take_steps(flow: Workflow, steps: Sequence[DueStep]) -> list[Taken]:
    """Take each due step that nobody has taken yet (its mail and its event); the steps taken."""
    ids = {step.running.request_id for step in steps}
    if ids:  # one query; session.get below finds them in the identity map
        flow.session.scalars(select(Request).where(Request.id.in_(ids))).all()
    taken = []
    for step in steps:
        request = flow.session.get(Request, step.running.request_id)
        to = recipients(flow, request, step)
        if not _claim(flow, step, to):
            continue
        _tell(flow, request, step, to)
        record(flow.session, request, f"sla_{step.running.clock}_{step.step}", actor="system",
               at=flow.now, deadline=step.running.due.isoformat(), to=list(to),
               late_minutes=flow.calendar.working_minutes_between(step.running.due, flow.now))
        taken.append(Taken(request.number, step.running.clock, step.step, to))
    return taken


def recipients(flow: Workflow, request: Request, step: DueStep) -> tuple[str, ...]:
    """Who is told of this step (see the module's docstring)."""
    clock, name, support = step.running.clock, step.step, flow.config.support
    if name == "reminder":
        return (request.requester_email,) if request.requester_email else ()
    if clock == "contact_info":
        return (support.tp1_address,)
    staff = {s.id: s for s in flow.lookup.staff()}
    assignee = staff.get(request.assignee_id)
    owner = assignee.email if assignee is not None and assignee.active else support.tp1_address
    chain = supervisor_chain(assignee, staff, flow.config.sla.supervisor_addresses)
    tp2 = (support.tp2_address,) if clock == "op4_answer" else ()
    if name == "warning":
        to = (*tp2, owner)
    elif name == "breach" and clock == "confirmation":
        to = (owner,)
    elif name == "breach":
        to = (*tp2, owner, *(chain[0] if chain else ()))
    else:
        to = chain[1] if len(chain) > 1 else ()
    return tuple(dict.fromkeys(to))


def supervisor_chain(staff: Staff | None, everyone: dict[int, Staff],
                     heads: Sequence[str]) -> list[tuple[str, ...]]:
    """The levels above ``staff``: each active supervisor up the register, then the heads."""
    chain: list[tuple[str, ...]] = []
    seen = {staff.id} if staff is not None else set()
    boss = everyone.get(staff.supervisor_id) if staff is not None else None
    while boss is not None and boss.id not in seen:
        seen.add(boss.id)
        if boss.active:
            chain.append((boss.email,))
        boss = everyone.get(boss.supervisor_id)
    if heads:
        chain.append(tuple(heads))
    return chain


def _claim(flow: Workflow, step: DueStep, to: tuple[str, ...]) -> bool:
    """Write the step's row; False when it is there already (taken before, or by another daemon)."""
    running = step.running
    row = flow.session.scalar(
        insert(SlaStep).values(request_id=running.request_id, clock=running.clock,
                               cycle=running.due, started_at=running.start, step=step.step,
                               at=flow.now, recipients=list(to))
        .on_conflict_do_nothing(index_elements=["request_id", "clock", "cycle", "step"])
        .returning(SlaStep.id))
    return row is not None


def _tell(flow: Workflow, request: Request, step: DueStep, to: tuple[str, ...]) -> None:
    """The step's mail: a reminder to the customer, or a notice to staff."""
    if not to:
        return
    running = step.running
    if step.step == "reminder":
        flow.tell_customer(request, "solution_reminder", automatic=True,
                           resolved=flow.local(running.start))
        return
    session = flow.session
    source = None
    if running.clock == "op4_answer" and running.source_id:
        source = session.get(Escalation, running.source_id)
    elif running.clock == "delivery" and running.source_id:
        source = session.get(Delivery, running.source_id)
    flow.notify_staff(request, "staff_sla", to=to, clock=running.clock, step=step.step,
                      started=flow.local(running.start), deadline=flow.local(running.due),
                      late=flow.calendar.working_minutes_between(running.due, flow.now),
                      last_event=_last_event(flow, request), source=source)


def _last_event(flow: Workflow, request: Request) -> dict | None:
    """The latest thing that happened to the request (not the SLA clock's own steps)."""
    event = flow.session.scalar(
        select(Event).where(Event.request_id == request.id, Event.kind != "alert",
                            Event.kind.not_like("sla\\_%"))
        .order_by(Event.at.desc(), Event.id.desc()).limit(1))
    if event is None:
        return None
    return {"at": flow.local(event.at), "kind": event.kind, "actor": event.actor,
            "from_status": event.from_status, "to_status": event.to_status}


__all__ = ["Taken", "recipients", "supervisor_chain", "take_steps"]
