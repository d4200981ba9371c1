"""Plain-text views of the register for the CLI, from its plain-SQL listings
(:mod:`mailbot.register.listing`).

Text that came from mail or from people (subjects, names, addresses, actors)
is shown through :func:`~mailbot.parsers.visible.one_line`: a terminal gets no
control characters and no bidi controls, even from rows stored before they were
cleaned at intake.
"""
from __future__ import annotations

import psycopg

from ..parsers.visible import one_line
from ..register import listing
from ..register.listing import Row


def request_list(conn: psycopg.Connection, status: str | None = None, limit: int = 50) -> str:
    rows = listing.requests(conn, status, limit)
    if not rows:
        return "no requests"
    return "\n".join(
        f"{r.number}  {r.status:<22} {_level(r.level):<4} {r.received_at:%Y-%m-%d %H:%M}  "
        f"{one_line(r.requester_email)}  {one_line(r.subject)[:60]}" for r in rows)


def request_detail(conn: psycopg.Connection, number: str) -> str | None:
    request = listing.request(conn, number)
    if request is None:
        return None
    organization = one_line(request.organization) if request.organization_id else "-"
    lines = [
        f"{request.number}: {one_line(request.subject)}",
        f"  status:        {request.status}",
        f"  level:         {_level(request.level)}",
        f"  from:          {one_line(request.requester_name)} <{one_line(request.requester_email)}>",
        f"  organisation:  {organization}",
        f"  channel:       {request.channel}",
        f"  received:      {request.received_at:%Y-%m-%d %H:%M:%S %Z}",
        f"  due:           {request.due_at:%Y-%m-%d %H:%M %Z}" if request.due_at else "  due:           -",
        *_follow_up_lines(conn, request),
        *_files_lines(conn, request),
        *_related(conn, request),
        "timeline:",
    ]
    for event in listing.timeline(conn, request.id):
        change = f" {event.from_status} → {event.to_status}" if event.to_status else ""
        about = f"  «{one_line(event.subject)}»" if event.has_message else ""
        lines.append(f"  {event.at:%Y-%m-%d %H:%M:%S}  {one_line(event.actor):<28} {event.kind}{change}{about}")
    return "\n".join(lines)


def _follow_up_lines(conn: psycopg.Connection, request: Row) -> list[str]:
    """A new question asked in a confirming reply: the request it continues, those continuing it."""
    lines = []
    if request.follows_id:
        lines.append(f"  follows:       {request.follows}")
    later = listing.followed_by(conn, request.id)
    if later:
        lines.append(f"  followed by:   {', '.join(later)}")
    return lines


def _files_lines(conn: psycopg.Connection, request: Row) -> list[str]:
    """ОП2: the files sent to the customer (and how their delivery stands), the files asked of them."""
    lines = []
    for d in listing.deliveries(conn, request.id):
        who = f" by {one_line(d.settled_by)}" if d.settled_by and d.status != "sent" else ""
        note = f" «{one_line(d.note)[:80]}»" if d.note else ""
        lines.append(f"  files sent:    {d.created_at:%Y-%m-%d %H:%M} {one_line(', '.join(d.files))} "
                     f"→ {one_line(d.recipient)}: {_delivery_state(d)}{who}{note}")
    for f in listing.file_requests(conn, request.id):
        state = {"waiting": f"WAITING (reminders: {f.reminders})", "cancelled": "cancelled",
                 "received": f"received {f.received_at:%Y-%m-%d %H:%M}" if f.received_at else ""}
        lines.append(f"  files asked:   {f.created_at:%Y-%m-%d %H:%M} {one_line(f.asked)} "
                     f"(by {one_line(f.asked_by)}): {state[f.status]}")
    return lines


def _delivery_state(d: Row) -> str:
    """How a delivery of files stands (only the settled ones have a time)."""
    if d.status == "confirmed":
        return f"confirmed by {d.confirmed_by} {d.confirmed_at:%Y-%m-%d %H:%M}"
    if d.status == "failed":
        return f"FAILED {d.settled_at:%Y-%m-%d %H:%M}: {one_line(d.failure or '')[:80]}"
    if d.status == "waived":
        return f"closed unconfirmed {d.settled_at:%Y-%m-%d %H:%M}"
    return f"AWAITING CONFIRMATION (reminders: {d.reminders})"


def _related(conn: psycopg.Connection, request: Row) -> list[str]:
    """The incident, the ОП3 request of an ОП4 and the ОП4 requests of an ОП3 one."""
    lines = []
    if request.incident_id:
        lines.append(f"  incident:      [{request.incident_number}] {request.incident_status} "
                     f"{one_line(request.incident_title)}")
    if request.parent_id:
        lines.append(f"  ОП4 of:        {request.parent}")
    children = listing.op4_requests(conn, request.id)
    if children:
        lines.append("  ОП4:           " + ", ".join(f"{c.number} ({c.status})" for c in children))
    return lines


def staff_table(conn: psycopg.Connection) -> str:
    return "\n".join(
        f"{s.login:<14} {s.tier} {'active ' if s.active else 'retired'} {s.experience_years:>2} y  "
        f"{s.email:<30} {s.full_name} — {s.department or '-'}"
        + (f"; supervisor {s.supervisor}" if s.supervisor is not None else "")
        for s in listing.staff(conn)) or "no staff"


def _level(level: int | None) -> str:
    return f"ОП{level}" if level else "-"
