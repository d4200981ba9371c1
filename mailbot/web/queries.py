"""Every read of the board, in one module: SQL against the register, scoped by the viewer's role.

Who sees what (docs/operations.md, "Board"): supervisors see everything; ТП1
the requests of levels ОП1–ОП3 (and those without a level yet); ТП2 the ОП4
requests, those escalated to ОП4 and the ОП3 requests an ОП4 request came from.
Everyone sees the requests assigned to him, and the known-error database (the
regulation has ТП1 search it for ОП3 requests). The quarantine is for
supervisors. A request outside the viewer's scope is not found, as if it did
not exist.

The register is sorted by the reaction deadline (requests without one last)
and paged by keyset: a page goes on after the (deadline, id) of the last row
shown, so a page deep in a million requests costs what the first one does.
The expressions below are the ones the indexes of migration 0014 are built on,
character for character: ``DONE IS FALSE`` rather than ``NOT DONE`` (which
PostgreSQL rewrites into a form no index column matches).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from ..register.status import Status

DEADLINE = "coalesce(r.due_at, 'infinity'::timestamptz)"
DONE = "(r.status IN ('closed', 'rejected'))"  # statuses no deadline runs for any more
OPEN = f"{DONE} IS FALSE"
AWAITING = f"r.first_reaction_at IS NULL AND {OPEN}"  # waiting for the first reaction
STATUSES = tuple(s.value for s in Status)
SOON = timedelta(hours=1)  # "due within the hour"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_KEY = re.compile(r"^(-?\d{1,17}|none)_(\d{1,18})$")


@dataclass(frozen=True)
class Viewer:
    """The staff member of a session, and what his role lets him see."""

    staff_id: int
    login: str
    full_name: str
    tier: str  # tp1, tp2
    supervisor: bool
    session_id: int

    @property
    def role(self) -> str:
        return "supervisor" if self.supervisor else self.tier

    @property
    def sees_quarantine(self) -> bool:
        return self.supervisor


def scope(viewer: Viewer, *, many: bool = False) -> str:
    """The SQL condition on requests ``r`` that the viewer may see (parameter ``:viewer``).

    ТП2's "an ОП4 request came from it" is a probe of the ОП4 index per row
    (``OFFSET 0`` keeps PostgreSQL from hashing all 50,000 parents first: 1 ms
    instead of 25 for a page); ``many``: for aggregates over thousands of rows,
    where hashing them once is cheaper.
    """
    if viewer.supervisor:
        return "true"
    if viewer.tier == "tp2":
        return ("(r.level = 4 OR r.status = 'escalated_op4' OR r.assignee_id = :viewer OR "
                "EXISTS (SELECT 1 FROM requests c WHERE c.parent_id = r.id AND c.level = 4"
                f"{'' if many else ' OFFSET 0'}))")
    return "(r.level IS DISTINCT FROM 4 OR r.assignee_id = :viewer)"


# ---------------------------------------------------------------- the register

@dataclass(frozen=True)
class Key:
    """Where a register page starts: after this deadline (None: no deadline) and id."""

    due_at: datetime | None
    id: int

    def encode(self) -> str:
        if self.due_at is None:
            return f"none_{self.id}"
        delta = self.due_at - EPOCH
        return f"{(delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds}_{self.id}"

    @classmethod
    def decode(cls, value: str) -> "Key | None":
        """The key of an ``after`` parameter; None when it is not one (the first page)."""
        match = _KEY.match(value or "")
        if match is None:
            return None
        due = None if match[1] == "none" else EPOCH + timedelta(microseconds=int(match[1]))
        return cls(due, int(match[2]))

    def sql_deadline(self) -> str:
        return "infinity" if self.due_at is None else self.due_at.isoformat()


@dataclass(frozen=True)
class RegisterQuery:
    status: str = "active"  # active (not closed or rejected), finished, all, or one status
    level: int | None = None  # 1-4; 0: no level yet
    organization: str = ""  # a part of the name or of an alias
    assignee: int | None = None  # a staff id; 0: nobody
    text: str = ""  # a part of the number, subject, requester's address or name
    descending: bool = False  # latest deadline first
    after: Key | None = None

    def params(self, **changes: Any) -> dict[str, str]:
        """The query as URL parameters (defaults left out), with ``changes``."""
        values = {"status": self.status, "level": self.level, "org": self.organization,
                  "assignee": self.assignee, "q": self.text,
                  "order": "desc" if self.descending else None,
                  "after": self.after.encode() if self.after else None} | changes
        return {k: str(v) for k, v in values.items()
                if v not in (None, "") and not (k == "status" and v == "active")}


@dataclass
class Page:
    rows: list[Row]
    next: Key | None  # the next page's start; None on the last page
    organizations: list[str] = field(default_factory=list)  # what the organisation filter matched


def register(session: Session, viewer: Viewer, query: RegisterQuery, now: datetime,
             limit: int) -> Page:
    """One page of the register: ``limit`` rows at most, sorted by deadline."""
    where, params = [scope(viewer)], {"viewer": viewer.staff_id, "limit": limit + 1}
    if query.status == "active":
        where.append(OPEN)
    elif query.status == "finished":
        where.append(f"{DONE} IS TRUE")
    elif query.status in STATUSES:
        where.append("r.status = :status")
        params["status"] = query.status
    if query.level == 0:
        where.append("r.level IS NULL")
    elif query.level:
        where.append("r.level = :level")
        params["level"] = query.level
    organizations: list[str] = []
    if query.organization:
        found = session.execute(text(
            "SELECT id, name FROM organizations o WHERE o.name ILIKE :like OR EXISTS "
            "(SELECT 1 FROM unnest(o.aliases) a WHERE a ILIKE :like) ORDER BY o.name LIMIT 50"),
            {"like": _like(query.organization)}).all()
        organizations = [name for _, name in found]
        where.append("r.organization_id = ANY(:organizations)")
        params["organizations"] = [id_ for id_, _ in found]
    if query.assignee == 0:
        where.append("r.assignee_id IS NULL")
    elif query.assignee:
        where.append("r.assignee_id = :assignee")
        params["assignee"] = query.assignee
    if query.text.strip():
        where.append("(r.number || ' ' || r.subject || ' ' || r.requester_email || ' ' || "
                     "r.requester_name) ILIKE :text")
        params["text"] = _like(query.text.strip())
    direction = "DESC" if query.descending else "ASC"
    if query.after is not None:
        where.append(f"({DEADLINE}, r.id) {'<' if query.descending else '>'} "
                     "(CAST(:after_deadline AS timestamptz), :after_id)")
        params |= {"after_deadline": query.after.sql_deadline(), "after_id": query.after.id}
    rows = session.execute(text(f"""
        SELECT r.id, r.number, r.status, r.level, r.subject, r.requester_name, r.requester_email,
               r.received_at, r.due_at, r.first_reaction_at, o.name AS organization,
               s.full_name AS assignee
        FROM requests r
        LEFT JOIN organizations o ON o.id = r.organization_id
        LEFT JOIN staff s ON s.id = r.assignee_id
        WHERE {' AND '.join(where)}
        ORDER BY {DEADLINE} {direction}, r.id {direction}
        LIMIT :limit"""), params).all()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return Page(rows, Key(last.due_at, last.id) if last else None, organizations)


def overdue(row: Any, now: datetime) -> bool:
    """Waiting for its first reaction past the deadline."""
    return (row.first_reaction_at is None and row.status not in ("closed", "rejected")
            and row.due_at is not None and row.due_at < now)


def due_soon(row: Any, now: datetime) -> bool:
    """Waiting for its first reaction, the deadline within the hour."""
    return (row.first_reaction_at is None and row.status not in ("closed", "rejected")
            and row.due_at is not None and now <= row.due_at < now + SOON)


def staff_choices(session: Session) -> list[Row]:
    """Active staff, for the assignee filter."""
    return session.execute(text("SELECT id, full_name, login FROM staff WHERE active "
                                "ORDER BY full_name, id")).all()


# ---------------------------------------------------------------- one request

@dataclass
class RequestView:
    request: Row
    children: list[Row]  # ОП4 requests made from it
    events: list[Row]
    messages: list[Row]
    files: dict[int, list[Row]]  # message id -> its files (a mail out: the files it carried)
    deliveries: list[Row]
    escalations: list[Row]


def request_view(session: Session, viewer: Viewer, number: str) -> RequestView | None:
    """A request with its trail; None when there is none the viewer may see."""
    params = {"viewer": viewer.staff_id, "number": number}
    request = session.execute(text(f"""
        SELECT r.*, o.name AS organization, c.full_name AS contact_name,
               s.full_name AS assignee, s.login AS assignee_login,
               i.number AS incident_number, i.title AS incident_title,
               p.number AS parent_number, p.level AS parent_level
        FROM requests r
        LEFT JOIN organizations o ON o.id = r.organization_id
        LEFT JOIN contacts c ON c.id = r.contact_id
        LEFT JOIN staff s ON s.id = r.assignee_id
        LEFT JOIN incidents i ON i.id = r.incident_id
        LEFT JOIN requests p ON p.id = r.parent_id
        WHERE r.number = :number AND {scope(viewer)}"""), params).first()
    if request is None:
        return None
    ids = {"id": request.id, "viewer": viewer.staff_id}
    children = session.execute(text(f"""
        SELECT r.number, r.level, r.status, r.subject FROM requests r
        WHERE r.parent_id = :id AND r.level = 4 AND {scope(viewer)} ORDER BY r.id"""), ids).all()
    events = session.execute(text("""
        SELECT e.at, e.actor, e.kind, e.from_status, e.to_status, e.details, m.subject
        FROM events e LEFT JOIN messages m ON m.id = e.message_id
        WHERE e.request_id = :id ORDER BY e.at, e.id"""), ids).all()
    messages = session.execute(text("""
        SELECT m.id, m.direction, m.kind, m.sender, m.recipients, m.subject, m.body,
               m.sent_at, m.created_at, m.outbox_id, ob.status AS outbox_status
        FROM messages m LEFT JOIN outbox ob ON ob.id = m.outbox_id
        WHERE m.request_id = :id ORDER BY m.created_at, m.id"""), ids).all()
    files: dict[int, list[Row]] = {}
    for row in session.execute(text("""
            SELECT m.id AS message_id, a.id, a.filename, a.size, a.content_type
            FROM messages m JOIN attachments a ON a.message_id = m.id
            WHERE m.request_id = :id
            UNION ALL
            SELECT m.id, a.id, a.filename, a.size, a.content_type
            FROM messages m JOIN outbox_files f ON f.outbox_id = m.outbox_id
            JOIN attachments a ON a.id = f.attachment_id
            WHERE m.request_id = :id
            ORDER BY 1, 2"""), ids):
        files.setdefault(row.message_id, []).append(row)
    deliveries = session.execute(text("""
        SELECT recipient, status, confirmed_by, confirmed_at, failure, created_at
        FROM deliveries WHERE request_id = :id ORDER BY id"""), ids).all()
    escalations = session.execute(text("""
        SELECT x.subject, x.status, x.sent_at, x.due_at, x.answered_at, x.result_sent_at,
               i.number AS incident_number
        FROM escalations x LEFT JOIN incidents i ON i.id = x.incident_id
        WHERE x.request_id = :id ORDER BY x.id"""), ids).all()
    return RequestView(request, children, events, messages, files, deliveries, escalations)


def attachment(session: Session, viewer: Viewer, attachment_id: int) -> Row | None:
    """A file of a request the viewer may see (name, hash, the mail it came in); else None.

    A file is reachable through the message it came in and through every
    outgoing mail that carried it: any of those requests in scope will do.
    """
    return session.execute(text(f"""
        SELECT a.id, a.filename, a.size, a.sha256, m.inbound_id
        FROM attachments a JOIN messages m ON m.id = a.message_id
        WHERE a.id = :id AND (
            EXISTS (SELECT 1 FROM requests r WHERE r.id = m.request_id AND {scope(viewer)})
            OR EXISTS (SELECT 1 FROM outbox_files f JOIN messages o ON o.outbox_id = f.outbox_id
                       JOIN requests r ON r.id = o.request_id
                       WHERE f.attachment_id = a.id AND {scope(viewer)}))"""),
        {"id": attachment_id, "viewer": viewer.staff_id}).first()


# ---------------------------------------------------------------- the SLA board

@dataclass
class SlaBoard:
    urgent: list[Row]  # overdue, or due within the hour, most urgent first
    by_level: list[Row]
    by_assignee: list[Row]
    met: dict[str, list[Row]]  # "week", "month" -> per level: met, total


def sla_board(session: Session, viewer: Viewer, now: datetime, tz: str,
              limit: int = 200) -> SlaBoard:
    params = {"viewer": viewer.staff_id, "now": now, "soon": now + SOON, "limit": limit}
    where, many = scope(viewer), scope(viewer, many=True)
    urgent = session.execute(text(f"""
        SELECT r.number, r.level, r.status, r.subject, r.received_at, r.due_at,
               r.first_reaction_at, o.name AS organization, s.full_name AS assignee
        FROM requests r
        LEFT JOIN organizations o ON o.id = r.organization_id
        LEFT JOIN staff s ON s.id = r.assignee_id
        WHERE {AWAITING} AND r.due_at < :soon AND {where}
        ORDER BY r.due_at, r.id LIMIT :limit"""), params).all()
    groups = session.execute(text(f"""
        SELECT GROUPING(r.level) = 0 AS by_level, r.level, r.assignee_id, s.full_name AS assignee,
               count(*) AS open,
               count(*) FILTER (WHERE r.first_reaction_at IS NULL) AS awaiting,
               count(*) FILTER (WHERE r.first_reaction_at IS NULL AND r.due_at < :now) AS overdue,
               count(*) FILTER (WHERE r.first_reaction_at IS NULL AND r.due_at >= :now
                                AND r.due_at < :soon) AS soon
        FROM requests r LEFT JOIN staff s ON s.id = r.assignee_id
        WHERE {OPEN} AND {many}
        GROUP BY GROUPING SETS ((r.level), (r.assignee_id, s.full_name))"""), params).all()
    by_level = sorted((g for g in groups if g.by_level), key=lambda g: g.level or 0)
    by_assignee = sorted((g for g in groups if not g.by_level),
                         key=lambda g: (-g.overdue, -g.soon, g.assignee is not None, g.assignee or ""))
    local = now.astimezone(ZoneInfo(tz))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = {"week": midnight - timedelta(days=local.weekday()), "month": midnight.replace(day=1)}
    met = {name: session.execute(text(f"""
        SELECT r.level, count(*) FILTER (WHERE r.first_reaction_at <= r.due_at) AS met,
               count(*) AS total
        FROM requests r
        WHERE {DEADLINE} >= :start AND {DEADLINE} < :now AND {many}
        GROUP BY r.level ORDER BY r.level NULLS FIRST"""), params | {"start": start}).all()
        for name, start in starts.items()}
    return SlaBoard(urgent, by_level, by_assignee, met)


# ---------------------------------------------------------------- known errors, quarantine

def incidents(session: Session, search: str, limit: int = 200) -> list[Row]:
    """The known-error database, newest first, or the best matches of ``search``."""
    columns = """i.id, i.number, i.title, i.status, i.created_at, i.updated_at,
                 (SELECT count(*) FROM requests r WHERE r.incident_id = i.id) AS requests"""
    if not search.strip():
        return session.execute(text(f"SELECT {columns} FROM incidents i ORDER BY i.id DESC "
                                    "LIMIT :limit"), {"limit": limit}).all()
    return session.execute(text(f"""
        SELECT {columns} FROM incidents i
        WHERE i.search @@ plainto_tsquery('russian', :q) OR i.title ILIKE :like OR i.number ILIKE :like
        ORDER BY ts_rank(i.search, plainto_tsquery('russian', :q)) DESC,
                 similarity(i.title, :q) DESC, i.id DESC
        LIMIT :limit"""), {"q": search.strip(), "like": _like(search.strip()), "limit": limit}).all()


def incident_view(session: Session, viewer: Viewer, number: str,
                  limit: int = 200) -> tuple[Row, list[Row]] | None:
    """An incident and the requests linked to it that the viewer may see (latest first)."""
    incident = session.execute(text("""
        SELECT i.*, s.full_name AS author FROM incidents i LEFT JOIN staff s ON s.id = i.created_by
        WHERE i.number = :number"""), {"number": number}).first()
    if incident is None:
        return None
    requests = session.execute(text(f"""
        SELECT r.number, r.level, r.status, r.subject, r.received_at, o.name AS organization
        FROM requests r LEFT JOIN organizations o ON o.id = r.organization_id
        WHERE r.incident_id = :id AND {scope(viewer)} ORDER BY r.id DESC LIMIT :limit"""),
        {"id": incident.id, "viewer": viewer.staff_id, "limit": limit}).all()
    return incident, requests


def quarantine(session: Session, resolved: bool, limit: int = 200) -> list[Row]:
    """Quarantined mail with the stage and the reason: open items, or those already handled."""
    return session.execute(text(f"""
        SELECT q.id, q.inbound_id, q.stage, q.error, q.created_at, q.resolved_at, q.resolution,
               i.source, i.size, i.received_at
        FROM quarantine q JOIN inbound i ON i.id = q.inbound_id
        WHERE q.resolved_at IS {'NOT ' if resolved else ''}NULL
        ORDER BY q.id DESC LIMIT :limit"""), {"limit": limit}).all()


def _like(value: str) -> str:
    """``value`` as an ILIKE pattern matching it anywhere (its own % and _ taken literally)."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", value) + "%"
