"""Read-only questions the rules and the workflow ask of the register."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import any_, func, select, text
from sqlalchemy.orm import Session

from .crm import DatabaseDirectory
from .models import Incident, Message, Outbox, Request, Staff

AUTOMATIC_KINDS = ("ack", "ask_contact_info", "no_contract")
SEARCH_WORD = re.compile(r"[0-9A-Za-zА-Яа-яЁё]{3,}")


@dataclass(frozen=True)
class IncidentMatch:
    number: str
    title: str
    solution: str
    score: float


class Lookup:
    """Queries over one session; every method is a read. ``directory`` is the CRM."""

    def __init__(self, session: Session, tz: str = "Europe/Moscow") -> None:
        self.session = session
        self.directory = DatabaseDirectory(session, tz)
        self._staff: list[Staff] | None = None

    def staff(self) -> list[Staff]:
        """Every staff member, read once per lookup (one batch of mail)."""
        if self._staff is None:
            self._staff = list(self.session.scalars(select(Staff).order_by(Staff.id)))
        return self._staff

    def staff_by_email(self, address: str) -> Staff | None:
        address = address.lower()
        return next((s for s in self.staff() if s.email == address), None)

    def staff_by_login_or_email(self, name: str) -> Staff | None:
        name = name.strip().lower()
        return self.session.scalar(select(Staff).where(
            (func.lower(Staff.login) == name) | (Staff.email == name)))

    def request_by_number(self, number: str) -> Request | None:
        return self.session.scalar(select(Request).where(Request.number == number))

    def request_by_message_ids(self, message_ids: tuple[str, ...]) -> Request | None:
        """The request of the nearest message in the thread that we know."""
        if not message_ids:
            return None
        rows = self.session.execute(
            select(Message.message_id, Message.request_id)
            .where(Message.message_id.in_(message_ids), Message.request_id.is_not(None))).all()
        by_id = {mid: rid for mid, rid in rows}
        for mid in message_ids:
            if mid in by_id:
                return self.session.get(Request, by_id[mid])
        return None

    def incident_by_number(self, number: str) -> Incident | None:
        return self.session.scalar(select(Incident).where(Incident.number == number))

    def search_incidents(self, query: str, limit: int = 3) -> list[IncidentMatch]:
        """Known errors most like ``query``: Russian full-text rank plus title similarity."""
        words = list(dict.fromkeys(w.lower() for w in SEARCH_WORD.findall(query)))[:40]
        if not words:
            return []
        rows = self.session.execute(text("""
            SELECT number, title, solution,
                   ts_rank_cd(search, q) + similarity(title, :raw) AS score
            FROM incidents, to_tsquery('russian', :tsq) AS q
            WHERE status <> 'closed' AND (search @@ q OR similarity(title, :raw) > 0.3)
            ORDER BY score DESC, number LIMIT :limit"""),
            {"tsq": " | ".join(words), "raw": query[:500], "limit": limit}).all()
        return [IncidentMatch(r.number, r.title, r.solution, float(r.score)) for r in rows]

    def automatic_replies_since(self, address: str, since: datetime) -> int:
        """How many automatic mails (acks and the like) went to ``address`` since ``since``."""
        return self.session.scalar(
            select(func.count()).select_from(Outbox)
            .where(Outbox.kind.in_(AUTOMATIC_KINDS), Outbox.created_at >= since,
                   any_(Outbox.recipients) == address.lower())) or 0
