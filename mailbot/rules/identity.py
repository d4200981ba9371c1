"""Who is writing: staff (and is it really them), a known customer, or someone unknown."""
from __future__ import annotations

import re

from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Action, Role, Verdict

RESULT = re.compile(r"\b(dkim|spf)\s*=\s*(\w+)", re.IGNORECASE)


class SenderIdentity(Rule):
    """Identify the sender by address: active staff first, then CRM contacts, then mail domain."""

    name = "sender-identity"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if not mail.from_addr:
            verdict.note(self.name, "no sender address")
            return
        staff = context.lookup.staff_by_email(mail.from_addr)
        if staff is not None and staff.active:
            verdict.role, verdict.staff = Role.STAFF, staff
            verdict.note(self.name, f"staff {staff.login}")
            return
        directory = context.lookup.directory
        contact = directory.find_contact(mail.from_addr)
        if contact is not None:
            verdict.role, verdict.contact = Role.CUSTOMER, contact
            if contact.organization_id is not None:
                verdict.organization = directory.get_organization(contact.organization_id)
            verdict.note(self.name, f"CRM contact {contact.id}")
            return
        organization = directory.find_organization_by_domain(mail.from_addr.rpartition("@")[2])
        if organization is not None:
            verdict.role, verdict.organization = Role.CUSTOMER, organization
            verdict.note(self.name, f"organisation {organization.name!r} by mail domain")
        else:
            verdict.note(self.name, "unknown sender")


class StaffAuthentication(Rule):
    """Staff mail counts only with DKIM or SPF pass from the trusted server, when one is configured.

    The sender address of a mail is easy to forge; ``Authentication-Results``
    headers (RFC 8601) written by our own receiving server are not. A staff
    address that fails this gets nothing done, and the attempt is logged.
    """

    name = "staff-authentication"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        trusted = context.config.staff.trusted_authserv_id.strip().lower()
        if verdict.role is not Role.STAFF or not trusted:
            return
        for header in mail.header_all("Authentication-Results"):
            authserv_id = header.split(";", 1)[0].strip().split()[0].lower() if header.strip() else ""
            if authserv_id != trusted:
                continue
            if any(result.lower() == "pass" for _, result in RESULT.findall(header)):
                verdict.note(self.name, f"authenticated by {trusted}")
                return
        verdict.may_auto_reply = False
        verdict.stop(self.name, Action.IGNORE,
                     f"SPOOFED? mail from staff address {mail.from_addr} without DKIM/SPF pass "
                     f"from {trusted}: nothing done")
