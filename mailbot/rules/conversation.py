"""Which request a message belongs to, and whether its sender may act on it."""
from __future__ import annotations

from ..parsers import MailKind, ParsedMail
from ..register.lookup import Lookup
from ..register.models import Request
from .base import Context, Rule
from .verdict import Action, Role, Untrusted, Verdict


class ThreadMatch(Rule):
    """A request number in the subject, then In-Reply-To/References, then the sender's own
    answer to this mail that was processed first (:func:`answered_first`), then an incident
    number in brackets (``[INC-000045]``: :func:`by_incident`) attach the mail to a request.

    Numbers are read from the subject only, never from the text: a number
    quoted or typed in the body of a new mail does not file it into that request
    (the parser finds none there). Automatic mail (auto-replies, bulk) that
    belongs to no request is ignored: it never opens a request. Only staff act on
    an ОП4 request (ТП1 ↔ ТП2): anyone else's mail that names one joins the
    customer's ОП3 request behind it.
    """

    name = "thread-match"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        lookup = context.lookup
        request = None
        for number in mail.request_numbers:
            request = lookup.request_by_number(number)
            if request is not None:
                verdict.note(self.name, f"request {number} named in the subject")
                break
        if request is None:
            request = lookup.request_by_message_ids(mail.thread_ids)
            if request is not None:
                verdict.note(self.name, f"request {request.number} by thread headers")
        if request is None:
            request = answered_first(lookup, mail)
            if request is not None:
                verdict.note(self.name, f"request {request.number}, opened by the sender's answer "
                                        "to this mail or to the mail it answers (processed first)")
        if request is None and mail.incident_numbers:
            request = by_incident(lookup.requests_by_incident(mail.incident_numbers), mail, verdict)
            if request is not None:
                verdict.note(self.name, f"request {request.number} by incident "
                                        f"{', '.join(mail.incident_numbers)}")
        if request is not None and request.level == 4 and verdict.role is not Role.STAFF:
            request = lookup.request_by_id(request.parent_id)
            verdict.note(self.name, f"not staff: the customer's request {request.number}")
        if request is not None:
            verdict.request, verdict.action = request, Action.APPEND
        elif mail.kind is not MailKind.HUMAN:
            verdict.stop(self.name, Action.IGNORE, "automatic mail outside any request")


def answered_first(lookup: Lookup, mail: ParsedMail) -> Request | None:
    """The request opened by the sender's own answer to this mail, or to the mail this one
    answers, when none of the thread is known otherwise: the answer came in live while this
    mail (or the one it answers) waited in a backlog, and was processed first. Only the
    sender's own: anyone else's mail naming these Message-IDs (guessed or copied) would draw
    this mail into their request."""
    for message_id in (mail.message_id, *mail.thread_ids):
        request = lookup.request_answering(message_id)
        if request is not None and mail.author and request.requester_email == mail.author:
            return request
    return None


def by_incident(requests: list[Request], mail: ParsedMail, verdict: Verdict) -> Request | None:
    """The request a mail tagged with an incident is about, of those linked to it (newest
    first): for ТП2 mail an ОП4 request, for ТП1 mail a customer's, for anyone else one of
    their own (:func:`belongs_to`); open ones first."""
    if verdict.role is Role.STAFF:
        tp2 = verdict.mailbox == "tp2"
        mine = [r for r in requests if (r.level == 4) == tp2]
    else:
        mine = [r for r in requests if r.level != 4 and belongs_to(mail.author, verdict, r)]
    return next((r for r in mine if r.status not in ("closed", "rejected")),
                mine[0] if mine else None)


def belongs_to(author: str, verdict: Verdict, request: Request) -> bool:
    """Is the sender the request's requester, or a registered contact of its organisation?"""
    if author and author == request.requester_email:
        return True
    contact = verdict.contact
    return (contact is not None and contact.registered and request.organization_id is not None
            and contact.organization_id == request.organization_id)


class ReplyOwnership(Rule):
    """A customer's mail acts on a request only when it is theirs.

    Confirmations, refusals, contact details and reopenings come from the
    requester or a registered (CRM or staff-vouched) contact of the request's
    organisation, in mail our receiving server does not find forged (``SenderForgery``). Anyone else's mail is kept on the request as a note from an
    unknown sender, staff are told, nothing changes, and the sender gets
    nothing that could reveal the request. Automatic mail (auto-replies) never
    acts anyway and simply joins the trail.
    """

    name = "reply-ownership"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        request = verdict.request
        if (verdict.action is not Action.APPEND or request is None or verdict.role is Role.STAFF
                or mail.kind is not MailKind.HUMAN
                or (not verdict.forged_sender and belongs_to(mail.author, verdict, request))):
            return
        who = mail.author or "an invalid From: address"
        verdict.untrusted = Untrusted.STRANGER
        verdict.untrusted_reason = (
            f"From: {who} forged, says our receiving server: {verdict.forged_sender}"
            if verdict.forged_sender else
            f"{who} is neither the requester nor a registered contact of the request's organisation")
        verdict.may_auto_reply = False
        verdict.stop(self.name, Action.NOTE, f"{verdict.untrusted_reason}: kept as a note, nothing done")
