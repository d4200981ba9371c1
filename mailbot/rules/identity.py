"""Who is writing: staff, a known customer, or someone unknown, by the ``From:`` address alone."""
from __future__ import annotations

from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Role, Verdict


class SenderIdentity(Rule):
    """Identify the sender by address: active staff first, then CRM contacts, then mail domain.

    The address is the one valid address of ``From:`` (:attr:`ParsedMail.author`),
    never ``Sender:`` or ``Reply-To:``; a ``From:`` that holds no address, several,
    or one that is not a plain mailbox identifies nobody. Whether staff mail is
    really from staff is :class:`~mailbot.rules.authentication.StaffAuthentication`'s
    question.
    """

    name = "sender-identity"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        author = mail.author
        if not author:
            verdict.may_auto_reply = False
            verdict.note(self.name, f"no valid sender address (From: {', '.join(mail.from_header)[:200]!r})")
            return
        staff = context.lookup.staff_by_email(author)
        if staff is not None and staff.active:
            verdict.role, verdict.staff = Role.STAFF, staff
            verdict.note(self.name, f"staff {staff.login}")
            return
        directory = context.lookup.directory
        contact = directory.find_contact(author)
        if contact is not None:
            verdict.role, verdict.contact = Role.CUSTOMER, contact
            if contact.organization_id is not None:
                verdict.organization = directory.get_organization(contact.organization_id)
            verdict.note(self.name, f"CRM contact {contact.id}"
                         f"{'' if contact.registered else ' (taken from mail, not registered)'}")
            return
        organization = directory.find_organization_by_domain(author.rpartition("@")[2])
        if organization is not None:
            verdict.role, verdict.organization = Role.CUSTOMER, organization
            verdict.note(self.name, f"organisation {organization.name!r} by mail domain")
        else:
            verdict.note(self.name, "unknown sender")
