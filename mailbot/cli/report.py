"""Plain-text views of the register for the CLI.

Text that came from mail or from people (subjects, names, addresses, actors)
is shown through :func:`~mailbot.parsers.visible.one_line`: a terminal gets no
control characters and no bidi controls, even from rows stored before they were
cleaned at intake.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..parsers.visible import one_line
from ..register.models import (
    AttachmentRow,
    Delivery,
    Event,
    FileRequest,
    Incident,
    Message,
    Organization,
    Request,
)


def request_list(session: Session, status: str | None = None, limit: int = 50) -> str:
    query = select(Request).order_by(Request.id.desc()).limit(limit)
    if status:
        query = query.where(Request.status == status)
    rows = session.scalars(query).all()
    if not rows:
        return "no requests"
    return "\n".join(
        f"{r.number}  {r.status:<22} {_level(r.level):<4} {r.received_at:%Y-%m-%d %H:%M}  "
        f"{one_line(r.requester_email)}  {one_line(r.subject)[:60]}" for r in rows)


def request_detail(session: Session, number: str) -> str | None:
    request = session.scalar(select(Request).where(Request.number == number))
    if request is None:
        return None
    organization = session.get(Organization, request.organization_id) if request.organization_id else None
    lines = [
        f"{request.number}: {one_line(request.subject)}",
        f"  status:        {request.status}",
        f"  level:         {_level(request.level)}",
        f"  from:          {one_line(request.requester_name)} <{one_line(request.requester_email)}>",
        f"  organisation:  {one_line(organization.name) if organization else '-'}",
        f"  channel:       {request.channel}",
        f"  received:      {request.received_at:%Y-%m-%d %H:%M:%S %Z}",
        f"  due:           {request.due_at:%Y-%m-%d %H:%M %Z}" if request.due_at else "  due:           -",
        *_follow_up_lines(session, request),
        *_files_lines(session, request),
        *_related(session, request),
        "timeline:",
    ]
    events = session.scalars(select(Event).where(Event.request_id == request.id)
                             .order_by(Event.at, Event.id)).all()
    subjects = dict(session.execute(select(Message.id, Message.subject)
                                    .where(Message.request_id == request.id)).all())
    for event in events:
        change = f" {event.from_status} → {event.to_status}" if event.to_status else ""
        about = f"  «{one_line(subjects[event.message_id])}»" if event.message_id in subjects else ""
        lines.append(f"  {event.at:%Y-%m-%d %H:%M:%S}  {one_line(event.actor):<28} {event.kind}{change}{about}")
    return "\n".join(lines)


def _follow_up_lines(session: Session, request: Request) -> list[str]:
    """A new question asked in a confirming reply: the request it continues, those continuing it."""
    lines = []
    if request.follows_id:
        lines.append(f"  follows:       {session.get(Request, request.follows_id).number}")
    later = session.scalars(select(Request.number).where(Request.follows_id == request.id)
                            .order_by(Request.id)).all()
    if later:
        lines.append(f"  followed by:   {', '.join(later)}")
    return lines


def _files_lines(session: Session, request: Request) -> list[str]:
    """ОП2: the files sent to the customer (and how their delivery stands), the files asked of them."""
    lines = []
    for d in session.scalars(select(Delivery).where(Delivery.request_id == request.id)
                             .order_by(Delivery.id)):
        how = _delivery_state(d)
        who = f" by {one_line(d.settled_by)}" if d.settled_by and d.status != "sent" else ""
        note = f" «{one_line(d.note)[:80]}»" if d.note else ""
        lines.append(f"  files sent:    {d.created_at:%Y-%m-%d %H:%M} {one_line(', '.join(d.files))} "
                     f"→ {one_line(d.recipient)}: {how}{who}{note}")
    for f in session.scalars(select(FileRequest).where(FileRequest.request_id == request.id)
                             .order_by(FileRequest.id)):
        state = {"waiting": f"WAITING (reminders: {f.reminders})", "cancelled": "cancelled",
                 "received": f"received {f.received_at:%Y-%m-%d %H:%M}" if f.received_at else ""}
        lines.append(f"  files asked:   {f.created_at:%Y-%m-%d %H:%M} {one_line(f.asked)} "
                     f"(by {one_line(f.asked_by)}): {state[f.status]}")
    return lines


def _delivery_state(d: Delivery) -> str:
    """How a delivery of files stands (only the settled ones have a time)."""
    if d.status == "confirmed":
        return f"confirmed by {d.confirmed_by} {d.confirmed_at:%Y-%m-%d %H:%M}"
    if d.status == "failed":
        return f"FAILED {d.settled_at:%Y-%m-%d %H:%M}: {one_line(d.failure or '')[:80]}"
    if d.status == "waived":
        return f"closed unconfirmed {d.settled_at:%Y-%m-%d %H:%M}"
    return f"AWAITING CONFIRMATION (reminders: {d.reminders})"


def _related(session: Session, request: Request) -> list[str]:
    """The incident, the ОП3 request of an ОП4 and the ОП4 requests of an ОП3 one."""
    lines = []
    if request.incident_id:
        incident = session.get(Incident, request.incident_id)
        lines.append(f"  incident:      [{incident.number}] {incident.status} {one_line(incident.title)}")
    if request.parent_id:
        lines.append(f"  ОП4 of:        {session.get(Request, request.parent_id).number}")
    children = session.scalars(select(Request).where(Request.parent_id == request.id)
                               .order_by(Request.id)).all()
    if children:
        lines.append("  ОП4:           " + ", ".join(f"{c.number} ({c.status})" for c in children))
    return lines


def request_files(session: Session, number: str) -> list[tuple[Message, AttachmentRow]] | None:
    """Every file in the request's trail, oldest first (None: no such request)."""
    request = session.scalar(select(Request).where(Request.number == number))
    if request is None:
        return None
    return [(m, a) for m, a in session.execute(
        select(Message, AttachmentRow).join(AttachmentRow, AttachmentRow.message_id == Message.id)
        .where(Message.request_id == request.id).order_by(AttachmentRow.id))]


def _level(level: int | None) -> str:
    return f"ОП{level}" if level else "-"
