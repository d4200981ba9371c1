"""Plain-text views of the known-error database for the CLI (text from people: one line each),
from the register's plain-SQL listings (:mod:`mailbot.register.listing`)."""
from __future__ import annotations

import psycopg

from ..parsers.visible import one_line, visible
from ..register import listing
from ..register.listing import Row
from .search import IncidentMatch


def matches(found: list[IncidentMatch]) -> str:
    return "\n".join(f"[{m.number}] {m.score:5.2f} {m.status:<13} {one_line(m.title)}\n"
                     f"        {one_line(m.reason)}" for m in found) or "nothing found"


def incident_list(conn: psycopg.Connection, status: str | None = None, limit: int = 100) -> str:
    return "\n".join(f"[{i.number}] {i.status:<13} {one_line(i.title)}"
                     for i in listing.incidents(conn, status, limit)) or "no incidents"


def incident_detail(conn: psycopg.Connection, incident: Row) -> str:
    """Every field, the requests linked to it, and its history."""
    lines = [
        f"[{incident.number}] {one_line(incident.title)}",
        f"  status:     {incident.status}"
        + (f" of [{incident.original}]" if incident.original is not None else ""),
        f"  product:    {one_line(incident.product) or '-'} {one_line(incident.version)}".rstrip(),
        f"  created:    {incident.created_at:%Y-%m-%d %H:%M} by "
        f"{incident.author if incident.author is not None else '-'}",
        f"  updated:    {incident.updated_at:%Y-%m-%d %H:%M}",
        "symptoms:", _block(incident.symptoms), "solution:", _block(incident.solution),
        "requests:",
    ]
    lines += [f"  {r.number}  ОП{r.level or '-'}  {r.status:<22} {one_line(r.subject)[:60]}"
              for r in listing.incident_requests(conn, incident.id)] or ["  -"]
    lines.append("history:")
    for entry in listing.incident_history(conn, incident.id):
        where = f" ({entry.request})" if entry.request is not None else ""
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
