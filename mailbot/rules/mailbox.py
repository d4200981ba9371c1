"""Whose mail is this: the support address's (customers and ТП1) or ТП2's (ОП4, regulation §5)?"""
from __future__ import annotations

from ..parsers import ParsedMail
from ..parsers.addresses import address_list
from .base import Context, Rule
from .verdict import Role, Verdict

ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To")  # where our MTA delivered the mail


def addressed_to(mail: ParsedMail, address: str) -> bool:
    """Was ``mail`` written or delivered to ``address`` (To, Cc, or our MTA's envelope headers)?"""
    address = address.lower()
    envelope = address_list([v for name in ENVELOPE_HEADERS for v in mail.header_all(name)], ())
    return address in (*mail.to, *mail.cc, *envelope)


class MailboxRole(Rule):
    """Staff mail follows the ТП2 address's rules when it came from the ТП2 mailbox, was written
    or delivered to the ТП2 address, or comes from a ТП2 member at all: ТП2's mail is internal,
    whatever address it went to, and ТП1's mail to ТП2 is never an answer to a customer. Other
    mail that reached the ТП2 address (a customer who found it) is support mail, as if it had
    come to the support address.
    """

    name = "mailbox"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        tp2 = context.mailbox == "tp2" or addressed_to(mail, context.config.support.tp2_address)
        staff = verdict.staff if verdict.role is Role.STAFF else None
        if staff is not None and (tp2 or staff.tier == "tp2"):
            verdict.mailbox = "tp2"
            verdict.note(self.name, f"ТП2 mail ({staff.tier} {staff.login})")
        elif tp2:
            verdict.note(self.name, "not staff: the ТП2 address's mail is handled as support mail")
