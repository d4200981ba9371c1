"""Staff replies: which commands they carry, and what is the answer to relay."""
from __future__ import annotations

from ..parsers import ParsedMail
from ..parsers.commands import parse_commands
from .base import Context, Rule
from .verdict import Action, Role, Verdict


class StaffCommands(Rule):
    """Read the ``#`` command lines at the top of a staff reply to a request.

    Staff mail that names no request cannot be acted on: the sender is told
    how to answer (reply to the notification, keep the number in the subject).
    """

    name = "staff-commands"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.role is not Role.STAFF:
            return
        if verdict.request is None:
            verdict.stop(self.name, Action.STAFF_HELP, "staff mail names no request")
            return
        verdict.may_auto_reply = False
        block = parse_commands(mail.new_text, context.config.support.incident_prefix)
        verdict.commands = block
        names = ", ".join(c.name for c in block.commands) or "no commands"
        errors = f"; {len(block.errors)} invalid" if block.errors else ""
        verdict.note(self.name, f"{names}{errors}")
