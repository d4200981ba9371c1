"""Read-only questions the rules ask of the register. Rules decide; they never write."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import any_, func, select
from sqlalchemy.orm import Session

from .models import Contact, Message, Organization, Outbox, Request, Staff


class Lookup:
    """Queries over one session; every method is a read."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def staff_by_email(self, address: str) -> Staff | None:
        return self.session.scalar(select(Staff).where(Staff.email == address.lower()))

    def contact_by_email(self, address: str) -> Contact | None:
        return self.session.scalar(select(Contact).where(Contact.email == address.lower()))

    def organization(self, organization_id: int | None) -> Organization | None:
        return self.session.get(Organization, organization_id) if organization_id else None

    def organization_by_domain(self, domain: str) -> Organization | None:
        """The one organisation owning this mail domain (None when none or ambiguous)."""
        found = self.session.scalars(select(Organization).where(
            any_(Organization.email_domains) == domain.lower()).limit(2)).all()
        return found[0] if len(found) == 1 else None

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

    def automatic_replies_since(self, address: str, since: datetime) -> int:
        """How many automatic mails (acks and the like) went to ``address`` since ``since``."""
        return self.session.scalar(
            select(func.count()).select_from(Outbox)
            .where(Outbox.kind.in_(AUTOMATIC_KINDS), Outbox.created_at >= since,
                   any_(Outbox.recipients) == address.lower())) or 0


AUTOMATIC_KINDS = ("ack", "ask_contact_info", "no_contract")
