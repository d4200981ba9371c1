"""ОП4 (regulation §5): ТП1's mail to the ТП2 address, its subject and ДДИ; ТП2's answers.

«ОП4 проводится только на основе открытых заявок на уровне ОП3»; «В теме письма обязательно
указать название организации, а также id-номер запроса». The subject must hold the number of
an open ОП3 request and the name or an alias of its organisation (compared as the CRM compares
names: case, quotes, ё/е and legal form aside). ДДИ («информация о системе; лог-файлы;
скриншот») is told apart by the file names and types of ``[ddi]``.
"""
from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from ..config import DDI_PARTS, Config, DdiConfig
from ..parsers import MailKind, ParsedMail
from ..parsers.commands import parse_commands
from ..register.lookup import Lookup
from ..register.models import Request
from ..register.status import Status
from .base import Context, Rule
from .verdict import Action, DdiCheck, EscalationCheck, Role, Verdict

ESCALATED_FROM = (Status.OPEN.value, Status.AWAITING_CUSTOMER.value)  # an open ОП3 request
DONE = (Status.CLOSED.value, Status.REJECTED.value)


def ddi_part(filename: str, content_type: str, config: DdiConfig) -> str | None:
    """Which part of the ДДИ a file is (the first of :data:`DDI_PARTS` it matches), or None."""
    name, ctype = filename.lower(), content_type.lower()
    for part in DDI_PARTS:
        for pattern in getattr(config, part):
            if fnmatchcase(ctype if "/" in pattern else name, pattern.lower()):
                return part
    return None


def ddi_check(files: Iterable[tuple[str, str]], config: DdiConfig) -> DdiCheck:
    """The ДДИ parts that ``(file name, content type)`` pairs hold, and the required ones missing."""
    found: dict[str, list[str]] = {}
    for filename, content_type in files:
        part = ddi_part(filename, content_type, config)
        if part is not None:
            found.setdefault(part, []).append(filename)
    return DdiCheck(found, tuple(p for p in config.required if p not in found))


def check_escalation(lookup: Lookup, config: Config, request: Request | None, *,
                     subject: str | None, number_problem: str | None = None,
                     files: Iterable[tuple[str, str]] = ()) -> EscalationCheck:
    """May ОП4 be opened on ``request`` (or added to, when one is under way)?

    ``subject``: the subject ТП1 wrote (None for ``#оп4``, whose subject the bot writes);
    ``number_problem``: what is wrong with the request number of that subject (``no_number``,
    ``unknown_number``; ``request`` then came from thread headers, if from anywhere);
    ``files``: the mail's own files, counted as ДДИ with those already on the request.
    """
    check = EscalationCheck(request=request)
    if number_problem:
        check.problems.append(number_problem)
    if request is None:
        return _staffed(check, lookup)
    check.op4 = lookup.op4_of(request)
    directory = lookup.directory
    check.organization = (directory.get_organization(request.organization_id)
                          if request.organization_id else None)
    if subject is None and check.op4 is not None:
        check.problems.append("already_escalated")
    elif check.op4 is None and (request.level != 3 or request.status not in ESCALATED_FROM):
        check.problems.append("not_open_op3")
    elif check.op4 is not None and request.status in DONE:
        check.problems.append("not_open_op3")
    if subject is not None and (check.organization is None or check.organization.id not in
                                {o.id for o in directory.find_organizations_by_name(subject)}):
        check.problems.append("no_organization")
    if check.op4 is None and not check.problems:
        stored = [(row.filename, row.content_type) for row in lookup.request_files(request)]
        check.ddi = ddi_check([*stored, *files], config.ddi)
        if check.ddi.missing:
            check.problems.append("ddi")
    return _staffed(check, lookup)


def _staffed(check: EscalationCheck, lookup: Lookup) -> EscalationCheck:
    if not lookup.tp2_staff():
        check.problems.append("no_tp2_staff")
    return check


class EscalationMail(Rule):
    """ТП1's mail to the ТП2 address opens ОП4 on the open ОП3 request its subject names (with its
    organisation), or adds to the ОП4 under way; otherwise it is refused: kept (on the request,
    when one is found) and answered with what is missing. Nothing of it reaches a customer."""

    name = "escalation"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.mailbox != "tp2" or verdict.role is not Role.STAFF or verdict.staff.tier != "tp1":
            return
        verdict.may_auto_reply = False
        lookup = context.lookup
        named = next((r for n in mail.request_numbers if (r := lookup.request_by_number(n))), None)
        request = _customers(lookup, named or verdict.request)
        verdict.request = request
        if mail.kind is not MailKind.HUMAN:
            verdict.stop(self.name, Action.APPEND if request else Action.IGNORE,
                         "automatic mail from ТП1 to the ТП2 address: kept")
            return
        problem = None if named else "unknown_number" if mail.request_numbers else "no_number"
        check = check_escalation(lookup, context.config, request, subject=mail.subject,
                                 number_problem=problem,
                                 files=[(a.filename, a.content_type) for a in mail.attachments
                                        if not a.inline])
        verdict.escalation = check
        what = ("more for ОП4 " + check.op4.number if check.op4 else "ОП4") if check.valid \
            else f"refused: {', '.join(check.problems)}"
        verdict.stop(self.name, Action.ESCALATE,
                     f"{what} on {request.number if request else 'no request'}")


class Tp2Answer(Rule):
    """ТП2's mail acts on the ОП4 request it is about (its number, the ОП3 request's, thread
    headers, or the incident in brackets): its commands, and its text for ТП1. ТП2 mail about a
    request with no ОП4 is an internal note on it (:class:`~.staff.StaffAddressing`); about no
    request at all, it gets the help. Nothing ТП2 writes reaches a customer."""

    name = "tp2-answer"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.mailbox != "tp2" or verdict.role is not Role.STAFF or verdict.staff.tier != "tp2":
            return
        verdict.may_auto_reply = False
        op4 = context.lookup.op4_of(verdict.request, closed_too=True) if verdict.request else None
        if op4 is None and verdict.request is not None:
            return  # about a request with no ОП4: an internal note on it (StaffAddressing)
        if op4 is None:
            verdict.stop(self.name, Action.STAFF_HELP, "ТП2 mail about no request")
            return
        verdict.request = op4
        if mail.kind is not MailKind.HUMAN:
            verdict.stop(self.name, Action.APPEND, f"automatic mail from ТП2 on {op4.number}: kept")
            return
        verdict.commands = parse_commands(mail.new_text, context.config.support.incident_prefix)
        names = ", ".join(c.name for c in verdict.commands.commands) or "no commands"
        verdict.stop(self.name, Action.TP2_ANSWER, f"ТП2 on {op4.number}: {names}")


def _customers(lookup: Lookup, request: Request | None) -> Request | None:
    """The customer's request behind ``request`` (an ОП4 request's ОП3 parent)."""
    if request is not None and request.level == 4 and request.parent_id:
        return lookup.request_by_id(request.parent_id)
    return request
