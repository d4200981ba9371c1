"""Who is writing: staff, a known customer, someone from a known company, or unknown."""
from __future__ import annotations

from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Role, Verdict


class SenderIdentity(Rule):
    """Identify the sender by address (staff, then contacts), then by mail domain."""

    name = "sender-identity"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        lookup = context.lookup
        staff = lookup.staff_by_email(mail.from_addr) if mail.from_addr else None
        if staff is not None and staff.active:
            verdict.role, verdict.staff = Role.STAFF, staff
            verdict.note(self.name, f"staff {staff.login}")
            return
        contact = lookup.contact_by_email(mail.from_addr) if mail.from_addr else None
        if contact is not None:
            verdict.role, verdict.contact = Role.CUSTOMER, contact
            verdict.organization = lookup.organization(contact.organization_id)
            verdict.note(self.name, f"contact {contact.id}")
            return
        domain = mail.from_addr.rpartition("@")[2]
        organization = lookup.organization_by_domain(domain) if domain else None
        if organization is not None:
            verdict.role, verdict.organization = Role.CUSTOMER, organization
            verdict.note(self.name, f"new contact of organisation {organization.id} by domain")
        else:
            verdict.note(self.name, "unknown sender")
