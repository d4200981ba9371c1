"""A staff reply to a request: its commands, then its answer relayed to the customer.

All commands are checked before any is applied: one invalid line means the
staff member gets the list of valid commands back and nothing else happens,
so nothing reaches the customer by mistake. ``#заметка`` makes the whole mail
an internal note, shown to the assignee. Otherwise the text after the commands goes to
the customer: as the solution (asking for confirmation) after ``#решено`` or ``#инцидент``,
with a closing notice after ``#закрыть`` or ``#подтверждено`` (the customer confirmed: an
unclear reply read by the assignee, a phone call), or as a plain answer. ``#адрес
исправлен`` clears the mark of a customer's address our mail could not reach. ОП2: ``#файлы``
sends the attached files with a standard text, ``#запросить`` asks the customer
for files, ``#доставлено`` records a confirmation of receipt given outside mail,
and ``#закрыть без подтверждения: причина`` closes although files sent are not
confirmed (``workflow/op2.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..parsers.commands import Command, CommandBlock, Problem, problem
from ..parsers.reply import comparable_lines
from ..register.crm import OrganizationInfo
from ..register.lookup import Lookup
from ..register.models import AttachmentRow, Incident, Message, Request, Staff
from ..register.status import Status
from ..rules.escalation import check_escalation, ddi_check
from .actions import Workflow
from .assign import is_eligible
from .deliveries import unsettled
from .escalation import Escalations
from .op2 import Op2
from .states import can_change, record
from .undeliverable import clear

SOLUTION_FROM = (Status.OPEN, Status.AWAITING_CUSTOMER, Status.ESCALATED_OP4)
DDI_FROM = (Status.OPEN.value, Status.AWAITING_CUSTOMER.value, Status.ESCALATED_OP4.value)
TP2_ONLY = ("new_incident", "solution", "incident_status")  # ТП2's commands (the ТП2 address)
ANSWERS = ("resolved", "incident", "files", "request_files", "ask_ddi")  # commands that mail the customer


@dataclass
class StaffReply:
    workflow: Workflow
    request: Request
    staff: Staff
    message: Message | None
    notify_errors: bool = True  # mail the problems back (False: the CLI prints them)

    def apply(self, block: CommandBlock) -> list[Problem]:
        """Carry out ``block``; the problems found (already reported to the staff member)."""
        if block.has("escalate"):
            return self.escalate(block)
        problems = list(block.errors) + self.check(block)
        if problems:
            if self.notify_errors:
                self.workflow.notify_staff(self.request, "staff_command_error",
                                           to=self.staff.email, errors=problems)
            return problems
        if block.has("note"):
            self.workflow.note(self.request, self.staff, block.text, self.message)
            return []
        session = self.workflow.session
        assignee = session.get(Staff, self.request.assignee_id) if self.request.assignee_id else None
        for command in block.commands:
            self.run(command)
        self.deliver(block)
        self.tell_assignee(block, assignee)
        return []

    def tell_assignee(self, block: CommandBlock, assignee: Staff | None) -> None:
        """A colleague acted on the assignee's request (answered the customer, closed it, changed
        it): the assignee sees what was done and sent, so that nobody answers twice, contradicts
        it or works on a closed request unaware."""
        files = self._attachments()
        acted = block.commands or block.text or files
        if assignee is None or assignee.id == self.staff.id or not acted:
            return
        text = block.text
        if block.has("incident") and not text:  # the incident's documented solution was sent
            text = self.workflow.session.get(Incident, self.request.incident_id).solution
        closed = any(block.has(name) for name in ("close", "close_unconfirmed", "confirmed"))
        self.workflow.notify_staff(
            self.request, "staff_colleague_answer", to=assignee.email, author=self.staff,
            text=text, sent_files=[row.filename for row in files], closed=closed,
            commands=[command.line for command in block.commands],
            answered=bool(text or files or any(block.has(name) for name in ANSWERS)))

    def check(self, block: CommandBlock) -> list[Problem]:
        """What would go wrong if the commands were applied (``templates/_problems.j2`` words it)."""
        problems: list[Problem] = []
        lookup, status = self.workflow.lookup, Status(self.request.status)
        for command in block.commands:
            name, arg = command.name, command.argument
            if name == "level" and arg == "4":
                problems.append(problem(command.line, "level_op4"))
            elif name == "assign":
                staff = lookup.staff_by_login_or_email(arg)
                level = int(block.get("level").argument) if block.has("level") else self.request.level
                if staff is None:
                    problems.append(problem(command.line, "no_staff", name=arg))
                elif not is_eligible(staff, level, self.workflow.config.staff):
                    problems.append(problem(command.line, "not_eligible", login=staff.login, level=level))
            elif name == "incident" and lookup.incident_by_number(arg) is None:
                problems.append(problem(command.line, "no_incident", number=arg))
            elif name == "organization" and not self._organization(arg):
                problems.append(problem(command.line, "no_organization", name=arg))
            elif name in ("resolved", "incident") and status not in SOLUTION_FROM:
                problems.append(problem(command.line, "status", status=status.value))
            elif name in ("close", "confirmed") and not can_change(status.value, Status.CLOSED):
                problems.append(problem(command.line, "status", status=status.value))
            elif name == "address_ok" and lookup.undeliverable(self.request.requester_email) is None:
                problems.append(problem(command.line, "not_undeliverable",
                                        address=self.request.requester_email or ""))
            elif name == "reopen" and not can_change(status.value, Status.OPEN):
                problems.append(problem(command.line, "status", status=status.value))
            elif name in TP2_ONLY:
                problems.append(problem(command.line, "tp2_command",
                                        address=self.workflow.config.support.tp2_address))
            elif name == "ask_ddi":
                problems += self._ddi_problems(command, block)
        sends_solution = block.has("resolved") or block.has("incident")
        if block.has("resolved") and not block.text:
            problems.append(problem("#решено", "no_solution_text"))
        if sends_solution and (block.has("close") or block.has("confirmed")):
            problems.append(problem("#закрыть", "close_with_solution"))
        if block.has("confirmed") and (block.has("close") or block.has("close_unconfirmed")):
            problems.append(problem("#подтверждено", "confirmed_with_close"))
        return problems + self.check_op2(block) + self.check_internal(block)

    def check_internal(self, block: CommandBlock) -> list[Problem]:
        """Nothing meant for staff goes to the customer (DESIGN.md §9): not a line of the bot's
        mail to staff about the request (a quote its cutting missed, a card pasted in), not a
        mail attached whole (Outlook's «attach the original», a notification forwarded)."""
        if block.has("note"):
            return []
        problems = []
        leaked = comparable_lines(block.text) & self.workflow.lookup.internal_lines(self.request) \
            if block.text else set()
        if leaked:
            problems.append(problem("", "internal_text", lines=sorted(leaked)[:5], count=len(leaked)))
        mails = [row.filename for row in self._attachments() if row.content_type == "message/rfc822"]
        if mails:
            problems.append(problem("", "attached_mail", files=mails))
        return problems

    def check_op2(self, block: CommandBlock) -> list[Problem]:
        """The ОП2 commands' problems (files, confirmations of receipt, closing without one)."""
        problems: list[Problem] = []
        op2, status = Op2(self.workflow), Status(self.request.status)
        for command in block.commands:
            name = command.name
            if name in ("files", "request_files") and not op2.may_send_files(self.request):
                problems.append(problem(command.line, "status", status=status.value))
            elif name == "files" and not self._attachments():
                problems.append(problem(command.line, "no_files"))
            elif name == "close_unconfirmed" and not can_change(status.value, Status.CLOSED):
                problems.append(problem(command.line, "status", status=status.value))
        files = [c.line for c in block.commands if c.name in ("files", "request_files")]
        others = [c.line for c in block.commands
                  if c.name in ("resolved", "incident", "note", "close", "close_unconfirmed",
                                "confirmed")]
        if len(files) > 1 or (files and others):
            problems.append(problem(", ".join(files + others), "one_mail_at_a_time"))
        if block.has("close_unconfirmed") and (block.has("resolved") or block.has("incident")):
            problems.append(problem("#закрыть", "close_with_solution"))
        closing = block.get("close") or block.get("confirmed")
        pending = unsettled(self.workflow.session, self.request) \
            if block.has("delivered") or closing else []
        if block.has("delivered") and not pending:
            problems.append(problem(block.get("delivered").line, "nothing_to_confirm"))
        if closing and pending and not block.has("delivered"):
            problems.append(problem(closing.line, "files_unconfirmed", deliveries=[
                (d.created_at.astimezone(self._tz()), d.files, d.status) for d in pending]))
        return problems

    def run(self, command: Command) -> None:
        flow, request, login = self.workflow, self.request, self.staff.login
        if command.name == "level":
            flow.set_level(request, int(command.argument), login)
        elif command.name == "assign":
            staff = flow.lookup.staff_by_login_or_email(command.argument)
            flow.assign(request, staff, login)
            flow.notify_staff(request, "staff_new_request", to=staff.email,
                              **flow.level_context(request))
        elif command.name == "incident":
            flow.link_incident(request, flow.lookup.incident_by_number(command.argument), login)
        elif command.name == "organization":
            flow.identify(request, self._organization(command.argument), None,
                          request.requester_name, actor=login, by_staff=True)
            if request.status == Status.AWAITING_CONTACT_INFO.value:
                contract = flow.lookup.directory.active_contract(request.organization_id, flow.now)
                flow.admit(request, contract_ok=contract is not None, actor=login,
                           message=self.message)
        elif command.name == "reopen":
            flow.reopen(request, actor=login, reason="staff", message=self.message)
        elif command.name == "delivered":
            Op2(flow).confirmed_by_staff(request, self.staff, command.argument, self.message)
        elif command.name == "address_ok":
            clear(flow, request.requester_email, actor=login, how="staff", request=request)


    def deliver(self, block: CommandBlock) -> None:
        """Send the text (and files) of the reply to the customer, as the commands say."""
        flow, request = self.workflow, self.request
        files = self._attachments()
        if block.has("ask_ddi"):  # the text goes to the customer with the request for the ДДИ
            Escalations(flow).ask_ddi(request, self.staff, self._missing_ddi(), block.text)
            return
        if block.has("incident") and not block.text:
            incident = flow.session.get(Incident, request.incident_id)
            flow.resolve(request, self.staff, incident.solution, files)
        elif block.has("resolved") or block.has("incident"):
            flow.resolve(request, self.staff, block.text, files)
        elif block.has("confirmed"):  # the customer confirmed: an unclear reply, by phone
            request.confirmation = "confirmed"
            record(flow.session, request, "confirmed", actor=self.staff.login, at=flow.now,
                   message=self.message, by_staff=True)
            flow.close(request, actor=self.staff.login, reason="confirmed", message=self.message)
        elif block.has("close") or block.has("close_unconfirmed"):
            override = block.get("close_unconfirmed")
            flow.close(request, actor=self.staff.login, reason=block.text or "staff",
                       message=self.message, override=override.argument if override else None)
            Escalations(flow).customer_result(request, "closed", actor=self.staff.login,
                                              message=self.message, text=block.text)
        elif block.has("files"):
            Op2(flow).send_files(request, self.staff, block.text, files,
                                 block.get("files").argument)
        elif block.has("request_files"):
            Op2(flow).ask_for_files(request, self.staff, block.get("request_files").argument,
                                    block.text, files, self.message)
        elif block.text or files:
            flow.answer(request, self.staff, block.text, files)

    # ------------------------------------------------------------ ОП4 (regulation §5)

    def escalate(self, block: CommandBlock) -> list[Problem]:
        """``#оп4``: open ОП4 on this open ОП3 request, the bot writing the mail to ТП2 (the text
        below the command is what ТП1 tried; the request's ДДИ and the mail's files go along)."""
        problems = list(block.errors) + [problem(c.line, "op4_alone")
                                         for c in block.commands if c.name != "escalate"]
        if problems:
            if self.notify_errors:
                self.workflow.notify_staff(self.request, "staff_command_error",
                                           to=self.staff.email, errors=problems)
            return problems
        files = self._attachments()
        escalations = Escalations(self.workflow)
        check = check_escalation(self.workflow.lookup, self.workflow.config, self.request,
                                 subject=None, files=[(f.filename, f.content_type) for f in files])
        if not check.valid:
            if self.notify_errors:
                escalations.refuse(check, self.staff, subject="", message=self.message)
            return [problem("#оп4", "refused", text=escalations.refusal(check, self.staff, subject="").text)]
        escalations.open(self.request, self.staff, text=block.text, message=self.message,
                         files=files)
        return []

    def _ddi_problems(self, command: Command, block: CommandBlock) -> list[Problem]:
        request = self.request
        if request.status not in DDI_FROM:
            return [problem(command.line, "status", status=request.status)]
        if not request.requester_email:
            return [problem(command.line, "no_customer_address")]
        if any(block.has(name) for name in ("note", "resolved", "incident", "close", "reopen")):
            return [problem(command.line, "ddi_alone")]
        if not self._missing_ddi():
            return [problem(command.line, "ddi_complete")]
        return []

    def _missing_ddi(self) -> tuple[str, ...]:
        stored = [(row.filename, row.content_type)
                  for row in self.workflow.lookup.request_files(self.request)]
        return ddi_check(stored, self.workflow.config.ddi).missing

    def _attachments(self) -> tuple[AttachmentRow, ...]:
        """The staff member's files (stored with their mail), for the customer."""
        if self.message is None:
            return ()
        return tuple(row for row in self.message.attachments if not row.inline)

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.workflow.config.timezone)

    def _organization(self, text: str) -> OrganizationInfo | None:
        return find_organization(self.workflow.lookup, text)


def find_organization(lookup: Lookup, text: str) -> OrganizationInfo | None:
    """An organisation by its CRM id, else by its name or an alias."""
    directory = lookup.directory
    found = directory.find_organization_by_crm_id(text.strip())
    return found or next(iter(directory.find_organizations_by_name(text)), None)
