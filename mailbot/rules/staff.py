"""Staff mail: whether it is meant for the customer, which commands it carries, what to relay."""
from __future__ import annotations

from dataclasses import replace

from ..parsers import MailKind, ParsedMail
from ..parsers.commands import parse_commands
from ..parsers.reply import without_signature
from .base import Context, Rule
from .verdict import Action, Role, Verdict


class StaffAddressing(Rule):
    """Staff mail is relayed to a customer only when it is meant for the customer.

    Meant for the customer (DESIGN.md §9, "internal mail never reaches a customer"): ``To:``
    holds the support address and no other staff address, and the mail answers the bot's
    notification about the request (In-Reply-To/References name our mail to staff about it)
    or names the request in its subject, and it comes from ТП1 (ТП2 works through ТП1:
    regulation §5). Anything else about a request is an internal note: mail to colleagues
    with the support address in ``Cc:`` only, mail to staff and the support address together,
    mail to ``support.note_address``, a reply in the customer's own thread, ТП2's mail. A note is kept on the request and shown to the assignee; it is never relayed,
    runs no command and is no reaction. Staff mail about no request, not addressed to the
    support address, is only kept (no help is sent back to a conversation among staff).
    Automatic staff mail (an out-of-office reply to a notification) joins the trail only.
    """

    name = "staff-addressing"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.role is not Role.STAFF:
            return
        support = context.config.support
        to, copies = set(mail.to), set(mail.to + mail.cc)
        noted = bool(support.note_address) and support.note_address in copies
        if verdict.request is None:
            if support.address not in to and not noted:
                verdict.stop(self.name, Action.IGNORE, "staff mail to staff about no request: kept")
            elif mail.kind is not MailKind.HUMAN:
                verdict.stop(self.name, Action.IGNORE, f"automatic staff mail ({mail.kind_reason})")
            return
        if mail.kind is not MailKind.HUMAN:
            verdict.internal = f"automatic mail ({mail.kind_reason})"
        elif noted:
            verdict.internal = f"written to the note address {support.note_address}"
        elif support.address not in to:
            verdict.internal = "addressed to staff, the support address only in Cc"
        elif others := sorted(_staff_addresses(to - {support.address}, context)):
            verdict.internal = f"addressed to staff too ({', '.join(others)})"
        elif (verdict.request.number not in mail.request_numbers
              and not context.lookup.staff_mail_in_thread(verdict.request, mail.thread_ids)):
            verdict.internal = "not an answer to the bot's notification, and no number in the subject"
        elif verdict.staff.tier == "tp2":
            verdict.internal = "from ТП2: customers hear only from ТП1 (regulation §5)"
        if verdict.internal:
            verdict.may_auto_reply = False
            verdict.note(self.name, f"internal note: {verdict.internal}")


def _staff_addresses(addresses: set[str], context: Context) -> set[str]:
    """Those of ``addresses`` that are staff members' or the support groups'."""
    groups = set(context.config.own_addresses)
    return {a for a in addresses if a in groups or context.lookup.staff_by_email(a) is not None}


class StaffCommands(Rule):
    """Read the ``#`` command lines at the top of a staff reply to a request.

    Staff mail that names no request cannot be acted on: the sender is told
    how to answer (reply to the notification, keep the number in the subject).
    The staff member's own signature block goes: mail to the customer is signed
    by the bot (their name and the support address), once.
    """

    name = "staff-commands"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.role is not Role.STAFF or verdict.internal:
            return
        if verdict.request is None:
            verdict.stop(self.name, Action.STAFF_HELP, "staff mail names no request")
            return
        verdict.may_auto_reply = False
        block = parse_commands(mail.new_text, context.config.support.incident_prefix)
        block = replace(block, text=without_signature(block.text, verdict.staff.full_name))
        verdict.commands = block
        names = ", ".join(c.name for c in block.commands) or "no commands"
        errors = f"; {len(block.errors)} invalid" if block.errors else ""
        verdict.note(self.name, f"{names}{errors}")
