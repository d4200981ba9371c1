"""Which request a message belongs to."""
from __future__ import annotations

from ..parsers import MailKind, ParsedMail
from .base import Context, Rule
from .verdict import Action, Verdict


class ThreadMatch(Rule):
    """A request number in the subject, then In-Reply-To/References, attach the mail to a request.

    Automatic mail (auto-replies, bulk) that belongs to no request is ignored:
    it never opens a request.
    """

    name = "thread-match"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        lookup = context.lookup
        request = None
        for number in mail.request_numbers:
            request = lookup.request_by_number(number)
            if request is not None:
                verdict.note(self.name, f"request {number} named in the mail")
                break
        if request is None:
            request = lookup.request_by_message_ids(mail.thread_ids)
            if request is not None:
                verdict.note(self.name, f"request {request.number} by thread headers")
        if request is not None:
            verdict.request, verdict.action = request, Action.APPEND
        elif mail.kind is not MailKind.HUMAN:
            verdict.stop(self.name, Action.IGNORE, "automatic mail outside any request")
