"""ОП4, the ТП1 → ТП2 protocol (regulation §5), on top of the request life cycle.

ОП4 is a request of its own: level 4, its parent the customer's ОП3 request, the same
organisation, and no customer address, so that nothing on it can reach a customer. ТП1 opens it
(``#оп4``, or mail to the ТП2 address); the ОП3 request waits in ``escalated_op4``; the mail to
the ТП2 members carries the customer's description, what ТП1 tried, the ДДИ files on the request
and the similar known incidents, and starts ТП2's answer clock (``escalations``, the ОП4
request's ``due_at``: ``sla.norm_op4``). ТП2 answers by mail at the ТП2 address (:class:`Tp2Reply`):
an incident linked or created, the solution documented, text for ТП1; the first answer stops
the clock. ТП1 relays the solution (``#инцидент``); the customer's word on it (or ТП1's closing)
goes back to ТП2 as the result notice, and ТП2 sets the incident's status.

Every step is an event on both requests' timelines where it concerns both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ..kb import incidents as kb
from ..parsers.commands import Command, CommandBlock, Problem, problem
from ..parsers.numbers import find_incident_numbers
from ..register.models import AttachmentRow, Escalation, Incident, Message, Request, Staff
from ..register.status import Status
from ..render import Rendered, render
from ..rules.escalation import ddi_part
from ..rules.verdict import EscalationCheck
from .actions import Workflow
from .states import can_change, change_status, record

TP2_COMMANDS = ("incident", "new_incident", "solution", "incident_status", "note")
OUTCOMES = ("confirmed", "not_helped", "closed")  # what the customer (or ТП1) made of a solution


@dataclass
class Escalations:
    """ОП4 operations in one workflow step."""

    flow: Workflow

    # ------------------------------------------------------------ ТП1 → ТП2

    def open(self, request: Request, staff: Staff, *, text: str, message: Message | None,
             files: Sequence[AttachmentRow] = (), forwarded: bool = False) -> Request:
        """Open ОП4 on the open ОП3 ``request`` and send it to ТП2 (``text``: what ТП1 wrote)."""
        flow = self.flow
        op4 = flow.create_request(channel=request.channel, subject=request.subject, email="",
                                  name=request.requester_name, thread_message_id=None, level=4)
        op4.parent_id, op4.organization_id = request.id, request.organization_id
        record(flow.session, op4, "created", actor=staff.login, at=flow.now, message=message,
               channel="op4", parent=request.number)
        change_status(flow.session, op4, Status.OPEN, actor=staff.login, at=flow.now,
                      message=message)
        flow.set_deadline(op4)
        change_status(flow.session, request, Status.ESCALATED_OP4, actor=staff.login, at=flow.now,
                      message=message, op4=op4.number)
        matches = flow.lookup.search_incidents(self.description(request), limit=5)
        subject = self._to_tp2(op4, request, "tp2_escalation", staff=staff, text=text,
                               matches=matches, forwarded=forwarded, followup=False,
                               files=self._files(request, files))
        flow.session.add(Escalation(request=op4, subject=subject, status="sent", sent_at=flow.now,
                                    due_at=op4.due_at, escalated_by=staff.id))
        for on in (request, op4):
            record(flow.session, on, "escalated", actor=staff.login, at=flow.now, message=message,
                   op4=op4.number, op3=request.number, by=("mail" if forwarded else "#оп4"),
                   incidents=[m.number for m in matches])
        return op4

    def follow_up(self, op4: Request, request: Request, staff: Staff, *, text: str,
                  message: Message | None, files: Sequence[AttachmentRow] = ()) -> None:
        """ТП1 writes again about an ОП4 under way: on to ТП2 (a solution that did not help
        opens it again)."""
        flow = self.flow
        if op4.status == Status.RESOLVED.value:
            change_status(flow.session, op4, Status.OPEN, actor=staff.login, at=flow.now,
                          message=message, reason="ТП1 wrote again")
        self._to_tp2(op4, request, "tp2_escalation", staff=staff, text=text, followup=True,
                     matches=[], forwarded=True, files=self._within(list(files)))
        record(flow.session, op4, "tp1_followup", actor=staff.login, at=flow.now, message=message)

    def refuse(self, check: EscalationCheck, staff: Staff, *, subject: str,
               message: Message | None) -> None:
        """Tell ТП1 why their mail (or ``#оп4``) opened no ОП4; it stays where it was kept."""
        flow = self.flow
        flow._mail_staff("staff_escalation_refused", staff.email,
                         self.refusal(check, staff, subject=subject), check.request)
        if check.request is not None:
            record(flow.session, check.request, "escalation_refused", actor=staff.login,
                   at=flow.now, message=message, problems=check.problems,
                   missing=list(check.ddi.missing) if check.ddi else [])

    def refusal(self, check: EscalationCheck, staff: Staff, *, subject: str) -> Rendered:
        """Why no ОП4 was opened, what is missing, what a valid subject looks like (``subject``:
        the one ТП1 wrote; empty for ``#оп4``)."""
        return render("staff_escalation_refused", with_html=False, check=check, staff=staff,
                      subject=subject, support=self.flow.config.support, ddi=self.flow.config.ddi)

    def ask_ddi(self, request: Request, staff: Staff, missing: Sequence[str], text: str) -> None:
        """Ask the customer for the missing ДДИ parts (ТП1's ``#дди``)."""
        flow = self.flow
        flow.tell_customer(request, "ask_ddi", automatic=False, staff=staff, missing=list(missing),
                           text=text, ddi=flow.config.ddi)
        flow.reacted(request, staff)
        if request.status == Status.OPEN.value:
            change_status(flow.session, request, Status.AWAITING_CUSTOMER, actor=staff.login,
                          at=flow.now)
        record(flow.session, request, "ddi_asked", actor=staff.login, at=flow.now,
               missing=list(missing))

    # ------------------------------------------------------------ results

    def customer_result(self, request: Request, outcome: str, *, actor: str,
                        message: Message | None, text: str = "") -> None:
        """The result of the solution at the customer's, to ТП2 (regulation §5: «Отправка
        уведомления в ТП2 о результатах решения»): ``confirmed`` or ``closed`` (by ТП1) close
        the ОП4, ``not_helped`` opens it again."""
        flow = self.flow
        op4 = flow.lookup.op4_of(request)
        if op4 is None or op4.level != 4 or op4 is request:
            return
        escalation = self.escalation_of(op4)
        if outcome == "not_helped":
            if can_change(op4.status, Status.OPEN) and op4.status != Status.OPEN.value:
                change_status(flow.session, op4, Status.OPEN, actor=actor, at=flow.now,
                              message=message, reason="the solution did not help")
            if escalation is not None and escalation.status == "solved":
                escalation.status = "answered"
        else:
            change_status(flow.session, op4, Status.CLOSED, actor=actor, at=flow.now,
                          message=message, reason=outcome)
            if escalation is not None:
                escalation.status, escalation.result_sent_at = "closed", flow.now
        self._to_tp2(op4, request, "tp2_result", outcome=outcome, text=text)
        for on in (request, op4):
            record(flow.session, on, "result_to_tp2", actor="system", at=flow.now,
                   message=message, outcome=outcome, op4=op4.number)

    # ------------------------------------------------------------ shared

    def escalation_of(self, op4: Request) -> Escalation | None:
        return self.flow.session.scalar(select(Escalation).where(Escalation.request == op4)
                                        .order_by(Escalation.id.desc()).limit(1))

    def description(self, request: Request) -> str:
        """The customer's own description of the problem: the request's first mail."""
        first = self.flow.session.scalar(
            select(Message.body).where(Message.request == request, Message.direction == "in",
                                       Message.sender == request.requester_email)
            .order_by(Message.id).limit(1))
        return f"{request.subject}\n{first or self.flow.customer_text(request)}"

    def link(self, op4: Request, incident: Incident, staff: Staff, message: Message | None) -> None:
        """Link the incident to the ОП4 request and to the customer's request behind it."""
        flow = self.flow
        for on in (op4, flow.lookup.request_by_id(op4.parent_id)):
            if on is not None and on.incident_id != incident.id:
                flow.link_incident(on, incident, staff.login)
                kb.link(flow.session, incident, on, actor=staff.login, now=flow.now,
                        message=message)

    def _to_tp2(self, op4: Request, request: Request, template: str,
                files: Sequence[AttachmentRow] = (), **context) -> str:
        """A mail to the ТП2 members about ``op4``; replies go to the ТП2 address. Its subject."""
        flow = self.flow
        incident = flow.session.get(Incident, op4.incident_id) if op4.incident_id else None
        content = render(template, with_html=False, **flow.context(
            request, op4=op4, incident=incident, description=self.description(request),
            attached=list(files), norm4=flow.config.sla.norm(4),
            op4_due=op4.due_at.astimezone(ZoneInfo(flow.config.timezone)) if op4.due_at else None,
            ddi_parts={f.filename: part for f in files
                       if (part := ddi_part(f.filename, f.content_type, flow.config.ddi))},
            **context))
        to = tuple(s.email for s in flow.lookup.tp2_staff()) or (flow.config.support.tp1_address,)
        flow._mail_staff(template, to, content, op4, tuple(files),
                         reply_to=flow.config.support.tp2_address)
        return content.subject

    def _files(self, request: Request, extra: Sequence[AttachmentRow]) -> list[AttachmentRow]:
        """The ДДИ for ТП2: the files on the request and the escalating mail's, each once."""
        rows = list({row.sha256: row for row in [*self.flow.lookup.request_files(request),
                                                 *extra] if not row.inline}.values())
        return self._within(rows)

    def _within(self, rows: list[AttachmentRow]) -> list[AttachmentRow]:
        budget, kept = self.flow.config.limits.notify_attachment_bytes, []
        for row in rows:
            if row.size <= budget:
                budget -= row.size
                kept.append(row)
        return kept


# ---------------------------------------------------------------- ТП2's mail

@dataclass
class Tp2Reply:
    """A ТП2 member's mail (or CLI command) about an ОП4 request.

    All commands are checked before any is applied (as for ТП1). ``#инцидент INC-…`` or an
    incident number in brackets in the subject links a known incident ("we know this");
    ``#новый инцидент <title>`` creates one; ``#решение``: the text is the solution, stored on
    the incident and sent to ТП1; ``#статус …`` sets the incident's status; ``#заметка`` keeps
    the mail as an internal note. Anything else (text, files) goes to ТП1, never to a customer.
    """

    escalations: Escalations
    op4: Request
    staff: Staff
    message: Message | None
    notify_errors: bool = True

    @property
    def flow(self) -> Workflow:
        return self.escalations.flow

    def apply(self, block: CommandBlock, tagged: Sequence[str] = ()) -> list[Problem]:
        """Carry out ``block`` (``tagged``: the incident numbers in the mail's subject)."""
        problems = list(block.errors) + self.check(block, tagged)
        if problems:
            if self.notify_errors:
                content = render("tp2_command_error", with_html=False, request=self.op4,
                                 errors=problems, support=self.flow.config.support)
                self.flow._mail_staff("tp2_command_error", self.staff.email, content, self.op4,
                                      reply_to=self.flow.config.support.tp2_address)
            return problems
        flow, op4, login = self.flow, self.op4, self.staff.login
        if block.has("note"):
            flow.note(op4, block.text, login, self.message)
            return []
        before = op4.incident_id
        incident = self._incident(block, tagged)
        if block.has("incident_status"):
            status, original = self._status(block.get("incident_status"))
            kb.set_status(flow.session, incident, status, duplicate_of=original, actor=login,
                          now=flow.now, request=op4, message=self.message)
        solution = block.text if block.has("solution") else ""
        if solution:
            kb.document_solution(flow.session, incident, solution, actor=login, now=flow.now,
                                 request=op4, message=self.message)
            self._solved(op4)
        if op4.incident_id != before or solution or block.text or self._has_files():
            self._tell_tp1(incident, text=block.text, solution=bool(solution),
                           new=block.has("new_incident"))
        return []

    def check(self, block: CommandBlock, tagged: Sequence[str]) -> list[Problem]:
        """What would go wrong (``templates/_problems.j2`` words it for the ТП2 member)."""
        problems: list[Problem] = []
        prefix = self.flow.config.support.incident_prefix
        known = self.op4.incident_id is not None
        for command in block.commands:
            if command.name not in TP2_COMMANDS:
                problems.append(problem(command.line, "not_tp2_command"))
            elif command.name == "incident":
                known = self._exists(command.argument, command.line, problems) or known
            elif command.name == "new_incident":
                known = True
        for number in self._new_tags(tagged):
            known = self._exists(number, f"[{number}]", problems) or known
        if block.has("new_incident") and (block.has("incident") or self._new_tags(tagged)):
            problems.append(problem("#новый инцидент", "incident_named"))
        if block.has("solution") and not block.text:
            problems.append(problem("#решение", "no_solution_text"))
        needs = [c for c in block.commands if c.name in ("solution", "incident_status")]
        if needs and not known:
            problems.append(problem(needs[0].line, "no_incident_yet", prefix=prefix))
        status = block.get("incident_status")
        if status is not None:
            problems += self._status_problems(status)
        return problems

    def _incident(self, block: CommandBlock, tagged: Sequence[str]) -> Incident | None:
        """The incident this mail is about: linked or created by it, else the ОП4's."""
        flow, op4 = self.flow, self.op4
        prefix = flow.config.support.incident_prefix
        if block.has("new_incident"):
            parent = flow.lookup.request_by_id(op4.parent_id)
            incident = kb.create(flow.session, title=block.get("new_incident").argument,
                                 symptoms=self.escalations.description(parent),
                                 status="investigating", prefix=prefix, actor=self.staff.login,
                                 now=flow.now, staff=self.staff, request=op4, message=self.message)
        else:
            named = [block.get("incident").argument] if block.has("incident") else []
            numbers = named + self._new_tags(tagged)
            if not numbers:
                return flow.session.get(Incident, op4.incident_id) if op4.incident_id else None
            incident = kb.by_number(flow.session, numbers[0], prefix)
        self.escalations.link(op4, incident, self.staff, self.message)
        return incident

    def _new_tags(self, tagged: Sequence[str]) -> list[str]:
        """Incident numbers in the subject other than the ОП4's own."""
        current = self.flow.session.get(Incident, self.op4.incident_id) if self.op4.incident_id \
            else None
        return [n for n in tagged if current is None or n != current.number]

    def _exists(self, number: str, where: str, problems: list[Problem]) -> bool:
        if kb.by_number(self.flow.session, number, self.flow.config.support.incident_prefix):
            return True
        problems.append(problem(where, "no_incident", number=number))
        return False

    def _status(self, command: Command) -> tuple[str, Incident | None]:
        """The status ``#статус`` names, and the original it names for a duplicate."""
        prefix = self.flow.config.support.incident_prefix
        numbers = find_incident_numbers(command.argument, prefix)
        name = " ".join(w for w in command.argument.split() if not any(ch.isdigit() for ch in w))
        original = kb.by_number(self.flow.session, numbers[0], prefix) if numbers else None
        return kb.status_named(name) or "", original

    def _status_problems(self, command: Command) -> list[Problem]:
        status, original = self._status(command)
        if not status:
            return [problem(command.line, "bad_incident_status")]
        if status == "duplicate" and original is None:
            return [problem(command.line, "duplicate_of")]
        return []

    def _solved(self, op4: Request) -> None:
        flow = self.flow
        if op4.status in (Status.OPEN.value, Status.AWAITING_CUSTOMER.value):
            change_status(flow.session, op4, Status.RESOLVED, actor=self.staff.login,
                          at=flow.now, message=self.message, reason="ТП2 documented the solution")
        escalation = self.escalations.escalation_of(op4)
        if escalation is not None and escalation.status in ("sent", "answered"):
            escalation.status = "solved"

    def _has_files(self) -> bool:
        return self.message is not None and any(not row.inline for row in self.message.attachments)

    def _tell_tp1(self, incident: Incident | None, *, text: str, solution: bool,
                  new: bool) -> None:
        """ТП2's answer to ТП1 (the assignee of the customer's request, or the ТП1 group), with
        ТП2's files; the first one stops ТП2's clock."""
        flow, op4 = self.flow, self.op4
        request = flow.lookup.request_by_id(op4.parent_id)
        flow.notify_staff(request, "tp1_tp2_answer", message=self.message, op4=op4,
                          incident=incident, text=text, solution=solution, new=new, tp2=self.staff)
        escalation = self.escalations.escalation_of(op4)
        if op4.first_reaction_at is None:
            op4.first_reaction_at = flow.now
            op4.assignee_id = op4.assignee_id or self.staff.id
            record(flow.session, op4, "first_reaction", actor=self.staff.login, at=flow.now)
        if escalation is not None and escalation.answered_at is None:
            escalation.answered_at = flow.now
            escalation.status = "answered" if escalation.status == "sent" else escalation.status
        for on in (request, op4):
            record(flow.session, on, "tp2_answer", actor=self.staff.login, at=flow.now,
                   message=self.message, incident=incident.number if incident else None,
                   solution=solution)
