"""Plain-text views of the known-error database for the CLI (text from people: one line each)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..parsers.visible import one_line, visible
from ..register.models import Incident, IncidentHistory, Request, Staff
from .search import IncidentMatch


def matches(found: list[IncidentMatch]) -> str:
    return "\n".join(f"[{m.number}] {m.score:5.2f} {m.status:<13} {one_line(m.title)}\n"
                     f"        {one_line(m.reason)}" for m in found) or "nothing found"


def incident_list(session: Session, status: str | None = None, limit: int = 100) -> str:
    query = select(Incident).order_by(Incident.id.desc()).limit(limit)
    if status:
        query = query.where(Incident.status == status)
    rows = session.scalars(query).all()
    return "\n".join(f"[{i.number}] {i.status:<13} {one_line(i.title)}" for i in rows) \
        or "no incidents"


def incident_detail(session: Session, incident: Incident) -> str:
    """Every field, the requests linked to it, and its history."""
    author = session.get(Staff, incident.created_by) if incident.created_by else None
    original = session.get(Incident, incident.duplicate_of) if incident.duplicate_of else None
    lines = [
        f"[{incident.number}] {one_line(incident.title)}",
        f"  status:     {incident.status}" + (f" of [{original.number}]" if original else ""),
        f"  product:    {one_line(incident.product) or '-'} {one_line(incident.version)}".rstrip(),
        f"  created:    {incident.created_at:%Y-%m-%d %H:%M} by {author.login if author else '-'}",
        f"  updated:    {incident.updated_at:%Y-%m-%d %H:%M}",
        "symptoms:", _block(incident.symptoms), "solution:", _block(incident.solution),
        "requests:",
    ]
    requests = session.scalars(select(Request).where(Request.incident_id == incident.id)
                               .order_by(Request.id)).all()
    lines += [f"  {r.number}  ОП{r.level or '-'}  {r.status:<22} {one_line(r.subject)[:60]}"
              for r in requests] or ["  -"]
    lines.append("history:")
    numbers = dict(session.execute(select(Request.id, Request.number).where(
        Request.id.in_(select(IncidentHistory.request_id).where(
            IncidentHistory.incident_id == incident.id)))).all())
    for entry in session.scalars(select(IncidentHistory).where(
            IncidentHistory.incident_id == incident.id).order_by(IncidentHistory.id)):
        where = f" ({numbers[entry.request_id]})" if entry.request_id in numbers else ""
        changes = "; ".join(f"{name}: {_short(old)} → {_short(new)}"
                            for name, (old, new) in entry.changes.items())
        lines.append(f"  {entry.at:%Y-%m-%d %H:%M}  {one_line(entry.actor):<14} "
                     f"{entry.kind}{where}{'  ' + changes if changes else ''}")
    return "\n".join(lines)


def _block(text: str) -> str:
    return "\n".join(f"  {line}" for line in visible(text).splitlines()) or "  -"


def _short(value) -> str:
    text = one_line(str(value)) if value not in (None, "") else "-"
    return text if len(text) <= 60 else text[:57] + "…"
