"""What can happen to a request: the operations shared by mail, staff commands and the CLI.

Every operation writes its events and outbox rows in the caller's
transaction, and every status change goes through ``states.change_status``.
"""
from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from operator import itemgetter
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Config
from ..outbox import InvalidRecipient, Outgoing, Queue, enqueue
from ..parsers.reply import without_prefixes
from ..register.crm import ContactInfo, OrganizationInfo
from ..register.lookup import IncidentMatch, Lookup
from ..register.models import AttachmentRow, Contact, Event, Incident, Message, Request, Staff
from ..register.status import Status
from ..render import Rendered, latin, render
from ..rules.contact import is_full_name
from ..rules.level import Assessment
from ..sla.calendar import WorkingCalendar, deadline, make_calendar
from .assign import choose_assignee, is_eligible
from .deliveries import DeliveryUnconfirmed, stored, unsettled, waiting_file_requests, waive
from .numbering import next_request_number
from .states import Journal, change_status, record

log = logging.getLogger(__name__)


def tag_subject(subject: str, request_number: str, incident_number: str) -> str:
    """``subject`` with ``[incident_number]`` after ``[request_number]`` (or in front), unless
    it has it already."""
    tag = f"[{incident_number}]"
    if tag in subject:
        return subject
    request_tag = f"[{request_number}]"
    if request_tag in subject:
        return subject.replace(request_tag, f"{request_tag} {tag}", 1)
    return f"{tag} {subject}"


MAX_TITLE = 200  # characters of a request's subject: what lists, cards and subjects show


def title(subject: str) -> str:
    """A request's subject: the mail's without "Re:"/"FW:"/"Пересл.:" before it (our mail and
    lists put their own), cut at a word within :data:`MAX_TITLE` characters (a 9,000-character
    subject would fill every list and every subject line that repeats it; the mail itself
    keeps it whole)."""
    subject = without_prefixes(subject)
    if len(subject) <= MAX_TITLE:
        return subject
    cut = subject[:MAX_TITLE - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[MAX_TITLE // 2:] else cut).rstrip() + "…"


Thread = tuple[str | None, tuple[str, ...]]  # In-Reply-To and References of an answer
CUSTOMER_THREAD_KINDS = ("ack", "relay", "solution", "ask_contact_info",  # our mail in their thread
                         "files", "files_request", "delivery_reminder", "files_reminder",
                         "solution_reminder")


@dataclass
class Workflow:
    """Operations on the register at one moment (``now``) in one transaction."""

    session: Session
    config: Config
    now: datetime
    lookup: Lookup | None = None  # shared with the rules (its caches live for a batch)

    def __post_init__(self) -> None:
        self.lookup = self.lookup or Lookup(self.session, self.config.timezone)
        self._customer_text: dict[Request, str] = {}  # the customer's latest words
        self._assessments: dict[Request, Assessment | None] = {}  # how the level was found
        # requests opened by mail whose From: our receiving server found forged: why
        self.forged: dict[Request, str] = {}

    def heard(self, request: Request, message: Message) -> None:
        """Note the customer's words (the requester's, or a registered colleague's) in an incoming
        message of ``request``: the staff notification shows them (saves reading them back)."""
        self._customer_text[request] = message.body

    @property
    def calendar(self) -> WorkingCalendar:
        return make_calendar(self.config.sla, self.config.timezone)

    def local(self, moment: datetime) -> datetime:
        """``moment`` in the service's time zone (Moscow time by default), as people read it."""
        return moment.astimezone(ZoneInfo(self.config.timezone))

    # ------------------------------------------------------------ creating

    def create_request(self, *, channel: str, subject: str, email: str, name: str,
                       thread_message_id: str | None, level: int | None,
                       assessment: Assessment | None = None, language: str = "ru") -> Request:
        """A new request; ``assessment``: how its level was found (None: set by staff);
        ``language``: of the customer's automatic mail."""
        year = self.now.astimezone(ZoneInfo(self.config.timezone)).year
        request = Request(
            number=next_request_number(self.lookup, self.config.support.request_prefix, year),
            requester_email=email, requester_name=name, channel=channel, subject=title(subject),
            status=Status.NEW.value, level=level, thread_message_id=thread_message_id,
            confirmation="none", received_at=self.now, created_at=self.now, updated_at=self.now,
            language=language)
        self.session.add(request)
        self._assessments[request] = assessment
        return request

    def identify(self, request: Request, organization: OrganizationInfo,
                 contact: ContactInfo | None, full_name: str, actor: str,
                 by_staff: bool = False) -> None:
        """Link the request to its organisation and contact, creating the contact when new.

        A contact created from what a sender wrote about himself is ``source = 'mail'``:
        it may act on its own requests, not on its organisation's (only CRM contacts and
        those a staff member linked, ``by_staff``, may).
        """
        request.organization_id = organization.id
        if contact is not None:
            full_name = contact.full_name or full_name
        if request.requester_email:
            row = self.lookup.directory.contact_row(request.requester_email)
            if row is None:
                row = Contact(email=request.requester_email, full_name=full_name,
                              organization_id=organization.id, source="staff" if by_staff else "mail")
                self.session.add(row)
            elif contact is None:  # not yet a contact of this organisation in the CRM
                row.organization_id = organization.id
                row.full_name = row.full_name or full_name
                if by_staff and not row.registered:
                    row.source = "staff"
            request.contact = row
        request.requester_name = full_name or request.requester_name
        record(self.session, request, "identified", actor=actor, at=self.now,
               organization=organization.name, contact=request.requester_name)

    def organization_known(self, request: Request, organization: OrganizationInfo, actor: str) -> None:
        """The organisation is known (the mail domain, or named in the mail) before the ФИО:
        staff see it, and the customer is asked only for the name."""
        request.organization_id = organization.id
        record(self.session, request, "organization", actor=actor, at=self.now,
               organization=organization.name)

    def admit(self, request: Request, *, contract_ok: bool, actor: str,
              message: Message | None = None, matches: Sequence[IncidentMatch] = (),
              may_auto_reply: bool = True, mail_thread: Thread = (None, ()),
              prefer: Staff | None = None) -> None:
        """The contract decides: open (acknowledge, assign, notify) or reject (tell both sides).

        ``prefer``: the assignee to keep when eligible (a follow-up of their request).
        """
        follows = self.session.get(Request, request.follows_id) if request.follows_id else None
        if not contract_ok:
            change_status(self.session, request, Status.REJECTED, actor=actor, at=self.now,
                          message=message, reason="no active support contract")
            if may_auto_reply:
                self.tell_customer(request, "no_contract", automatic=True, thread=mail_thread)
            self.notify_staff(request, "staff_event", event="rejected")
            return
        change_status(self.session, request, Status.OPEN, actor=actor, at=self.now,
                      message=message)
        self.start_reaction_clock(request)
        assignee = (prefer if prefer is not None and is_eligible(prefer, request.level, self.config.staff)
                    else choose_assignee(self.lookup, request.level, self.config.staff))
        if assignee is not None:
            self.assign(request, assignee, actor="system")
        level = self.level_context(request)
        if may_auto_reply:
            self.tell_customer(request, "ack", automatic=True, thread=mail_thread, follows=follows,
                               **level)
        self.notify_staff(request, "staff_new_request", matches=list(matches),
                          message=message, follows=follows, **level)

    def ask_contact_info(self, request: Request, *, actor: str, message: Message | None,
                         may_auto_reply: bool, mail_thread: Thread) -> None:
        change_status(self.session, request, Status.AWAITING_CONTACT_INFO, actor=actor,
                      at=self.now, message=message)
        if may_auto_reply and request.requester_email:
            self.tell_customer(request, "ask_contact_info", automatic=True, thread=mail_thread)
        self.notify_staff(request, "staff_new_request", message=message,
                          **self.level_context(request))

    # ------------------------------------------------------------ staff operations

    def set_level(self, request: Request, level: int, actor: str) -> None:
        """A staff change (or confirmation) of level recomputes the deadline and is recorded."""
        old = request.level
        request.level = level
        self._assessments[request] = None  # staff decided: no doubt left
        record(self.session, request, "level", actor=actor, at=self.now, old=old, new=level)
        if request.status not in (Status.REJECTED.value, Status.AWAITING_CONTACT_INFO.value):
            self.set_deadline(request)

    def set_deadline(self, request: Request) -> None:
        """The reaction deadline, counted from the start of the running reaction clock; while the
        level is unsure (rules/level.py), of the candidate level with the shortest norm: ТП1
        confirms the level in time for any."""
        if request.level:
            assessment = self.level_assessment(request)
            levels = assessment.candidates if assessment and assessment.unsure else (request.level,)
            request.due_at = min(deadline(level, self.clock_start(request), self.calendar,
                                          self.config.sla) for level in levels)

    def clock_start(self, request: Request) -> datetime:
        """When the running reaction clock started (or the first one: the request's opening,
        or its arrival for requests older than the clock)."""
        return request.waiting_since or request.opened_at or request.received_at

    def start_reaction_clock(self, request: Request) -> None:
        """The customer waits for a human reaction from now: the request was opened (after its
        intake, so waiting for contact details does not count) or reopened by the customer.
        ОП4's first reaction is ТП2's answer to the escalation, watched on the escalation."""
        if not request.level or request.level == 4:
            return
        request.opened_at = request.opened_at or self.now
        request.waiting_since = self.now
        self.set_deadline(request)

    def level_assessment(self, request: Request) -> Assessment | None:
        """How the request's level was found, while no staff member has set it; None then.

        Known in memory in the step that created the request; later (an admission
        after the contact question) from the trail: the "created" event, unless a
        "level" event (a staff decision) followed it.
        """
        if request in self._assessments:
            return self._assessments[request]
        journal = self.session.info.get(Journal.KEY)
        pending = [(e["kind"], e["details"]) for e in (journal.events if journal else ())
                   if e["request"] is request and e["kind"] in ("created", "level")]
        stored = self.session.execute(
            select(Event.kind, Event.details).where(
                Event.request_id == request.id, Event.kind.in_(("created", "level")))
            .order_by(Event.id.desc()).limit(1)).first() if request.id else None
        kind, details = (pending or [stored or (None, {})])[-1]
        found = details.get("level") if kind == "created" else None
        self._assessments[request] = Assessment.from_details(found) if found else None
        return self._assessments[request]

    def level_context(self, request: Request) -> dict:
        """For the acknowledgement and the staff notification: how the level was found and,
        while unsure, the longest norm of the candidate levels (what the customer is
        promised) with its deadline."""
        assessment = self.level_assessment(request)
        if assessment is None or not assessment.unsure:
            return {"assessment": assessment}
        longest = max(assessment.candidates, key=self.config.sla.norm)
        due = deadline(longest, self.clock_start(request), self.calendar, self.config.sla)
        return {"assessment": assessment, "promised_norm": self.config.sla.norm(longest),
                "promised_due": due.astimezone(ZoneInfo(self.config.timezone))}

    def assign(self, request: Request, staff: Staff, actor: str) -> None:
        request.assignee_id = staff.id
        record(self.session, request, "assigned", actor=actor, at=self.now, assignee=staff.login)

    def link_incident(self, request: Request, incident: Incident, actor: str) -> None:
        request.incident_id = incident.id
        record(self.session, request, "incident", actor=actor, at=self.now, incident=incident.number)

    def note(self, request: Request, staff: Staff, text: str, message: Message | None,
             how: str = "#заметка", recipients: Sequence[str] = ()) -> None:
        """An internal note on the request (``how``: why it is one): recorded, and shown to
        the assignee (the ТП1 group when nobody is assigned) unless they wrote it or already
        got the mail (``recipients``). Nothing goes to the customer; it is no reaction."""
        record(self.session, request, "note", actor=staff.login, at=self.now,
               message=message, text=text, how=how)
        assignee = self.session.get(Staff, request.assignee_id) if request.assignee_id else None
        reader = assignee.email if assignee else self.config.support.tp1_address
        if reader != staff.email and reader not in recipients:
            self.notify_staff(request, "staff_note", to=reader, message=message, author=staff,
                              text=text, how=how)

    def answer(self, request: Request, staff: Staff, text: str,
               files: tuple[AttachmentRow, ...] = (), template: str = "relay", **context) -> None:
        """Relay a staff answer to the customer; the first human reaction stops the clock."""
        self.tell_customer(request, template, automatic=False, staff=staff, text=text, files=files,
                           **context)
        self.reacted(request, staff)
        if request.status == Status.OPEN.value:
            change_status(self.session, request, Status.AWAITING_CUSTOMER, actor=staff.login,
                          at=self.now)

    def resolve(self, request: Request, staff: Staff, text: str,
                files: tuple[AttachmentRow, ...] = ()) -> None:
        """Send the solution and ask the customer to confirm it works."""
        incident = self.session.get(Incident, request.incident_id) if request.incident_id else None
        self.tell_customer(request, "solution", automatic=False, staff=staff, text=text,
                           incident=incident, files=files)
        self.reacted(request, staff)
        request.confirmation = "requested"
        change_status(self.session, request, Status.RESOLVED, actor=staff.login, at=self.now)

    def close(self, request: Request, actor: str, reason: str,
              message: Message | None = None, override: str | None = None,
              tell: bool = True) -> None:
        """Close, telling the customer (``reason``: 'confirmed', 'quiet', 'staff' or words for them;
        ``tell`` False: another mail of this step tells them, a follow-up's acknowledgement).

        Files sent on the request must be confirmed first (regulation §3): with
        deliveries unsettled it closes only by a staff ``override`` (the reason,
        recorded), which waives them; else :class:`DeliveryUnconfirmed`. File
        requests still waiting are cancelled.
        """
        pending = unsettled(self.session, request)
        if pending and override is None:
            raise DeliveryUnconfirmed(f"{request.number}: files sent are not confirmed")
        for delivery in stored(pending):
            waive(delivery, override, at=self.now, by=actor, message=message)
            record(self.session, request, "delivery_waived", actor=actor, at=self.now,
                   message=message, files=delivery.files, to=delivery.recipient, reason=override)
        for asked in waiting_file_requests(self.session, request):
            asked.status = "cancelled"
            record(self.session, request, "files_request_cancelled", actor=actor, at=self.now,
                   message=message, asked=asked.asked)
        details = {"override": override} if override is not None else {}
        change_status(self.session, request, Status.CLOSED, actor=actor, at=self.now,
                      message=message, reason=reason, **details)
        request.waiting_since = None
        if tell:
            self.tell_customer(request, "closed", automatic=True, reason=reason)

    def reopen(self, request: Request, actor: str, reason: str,
               message: Message | None = None, customer_waits: bool = False) -> None:
        """Open the request again. The reaction clock runs again when the customer reopened it
        (``customer_waits``) or nobody has answered yet (a refusal overridden, say)."""
        change_status(self.session, request, Status.OPEN, actor=actor, at=self.now,
                      message=message, reason=reason)
        if customer_waits or request.first_reaction_at is None:
            self.start_reaction_clock(request)

    def reacted(self, request: Request, staff: Staff) -> None:
        """A human answer reached the customer: the reaction clock stops."""
        request.waiting_since = None
        if request.first_reaction_at is None:
            request.first_reaction_at = self.now
            record(self.session, request, "first_reaction", actor=staff.login, at=self.now)

    # ------------------------------------------------------------ mail

    def tell_customer(self, request: Request, template: str, *, automatic: bool,
                      thread: Thread | None = None,
                      staff: Staff | None = None,
                      files: tuple[AttachmentRow, ...] = (), **context) -> str | None:
        """A mail to the requester, from the support address, in the customer's thread (its
        Message-ID).

        A mail with files is an ОП2 delivery (regulation §3): it asks for a read
        receipt, its text asks for a confirmation (``receipt`` in the template), a
        delivery record waits for it, and an ОП1 request becomes ОП2.
        """
        if not request.requester_email:
            return None
        unreachable = self.lookup.undeliverable(request.requester_email)
        if automatic and unreachable is not None:  # issue 16 §5: staff reach them another way
            record(self.session, request, "mail_not_sent", actor="system", at=self.now,
                   mail=template, to=[request.requester_email],
                   reason=f"undeliverable ({unreachable.source}): {unreachable.reply[:300]}")
            return None
        context.update(receipt=bool(files), sent_files=[row.filename for row in files])
        in_reply_to, references = thread if thread and thread[0] else self.customer_thread(request)
        row = self.lookup.directory.contact_row(request.requester_email)
        registered = row is not None and row.registered
        name = request.requester_name if registered or is_full_name(request.requester_name) else ""
        content = render(template, language=request.language, **self.context(
            request, staff=staff, customer_name=name,
            echo_subject=(registered or not automatic) and not self.opened_by_forged_mail(request),
            **context))
        from_name = self.support_name(request, staff)
        sent = self._send(Outgoing(
            kind=template, to=(request.requester_email,), content=content, request=request,
            in_reply_to=in_reply_to, references=references, automatic=automatic,
            from_name=from_name, files=files, receipt=bool(files)))
        if sent and files:
            self.files_sent(request, files, sent, actor=staff.login if staff else "system")
        return sent

    def support_name(self, request: Request, staff: Staff | None) -> str:
        """Who a customer's mail is from: the support service, or a staff member of it, named in
        the customer's language."""
        support = self.config.support.name_en if request.language == "en" else self.config.support.name
        if staff is None:
            return support
        return f"{latin(staff.full_name) if request.language == 'en' else staff.full_name} ({support})"

    def opened_by_forged_mail(self, request: Request) -> bool:
        """Whether our receiving server found the From: of the mail that opened ``request``
        forged: then no mail of ours repeats its subject, in this batch or any later one."""
        return request in self.forged or bool(request.id and self.lookup.forged_at_creation(request.id))

    def files_sent(self, request: Request, files: tuple[AttachmentRow, ...], message_id: str,
                   actor: str) -> None:
        """Files went to the customer: recorded; sending files makes a request at least ОП2."""
        record(self.session, request, "files_sent", actor=actor, at=self.now,
               files=[row.filename for row in files], to=request.requester_email, mail=message_id)
        if request.level == 1:
            self.set_level(request, 2, actor)

    def notify_staff(self, request: Request, template: str, *, to: str | Sequence[str] | None = None,
                     message: Message | None = None, **context) -> str | None:
        """A mail to the assignee (or the ТП1 group; ``to``: one or more addresses); replying to
        it reaches the bot.

        The files of ``message`` (the customer's mail) go along up to
        ``limits.notify_attachment_bytes``; the template lists every file.
        """
        if to is None:
            assignee = self.session.get(Staff, request.assignee_id) if request.assignee_id else None
            to = assignee.email if assignee else self.config.support.tp1_address
        files, attached = self.files_for_staff(message)
        content = render(template, with_html=False, **self.context(request, files=files, **context))
        return self._mail_staff(template, to, content, request, attached)

    def alert(self, about: str, template: str, *, request: Request | None = None,
              to: str | None = None, message: Message | None = None, **context) -> bool:
        """Tell staff (the request's assignee or ТП1; ``to``) something about ``about`` (a
        sender, the auto-reply cap) at most once an hour; whether it was told now.

        Each alert is an event (kind ``alert``), so the hour counts across batches and daemons.
        """
        if self.lookup.alerted_within_hour(about, self.now):
            return False
        if request is not None:
            self.notify_staff(request, template, to=to, **context)
        else:
            content = render(template, with_html=False, support=self.config.support, request=None,
                             **context)
            self._mail_staff(template, to or self.config.support.tp1_address, content)
        record(self.session, request, "alert", actor="system", at=self.now, message=message,
               about=about, template=template)
        return True

    def help_staff(self, address: str, template: str = "staff_help", **context) -> str | None:
        """Explain to a staff member how to answer (their mail named no request)."""
        content = render(template, with_html=False, support=self.config.support, **context)
        return self._mail_staff(template, address, content)

    def _mail_staff(self, kind: str, to: str | Sequence[str], content: Rendered,
                    request: Request | None = None, files: tuple[AttachmentRow, ...] = (),
                    reply_to: str | None = None) -> str | None:
        """Staff mail comes from the support address, and replies go back to it (or to
        ``reply_to``: ТП2's mail to the ТП2 address)."""
        recipients = (to,) if isinstance(to, str) else tuple(to)
        return self._send(Outgoing(kind=kind, to=recipients, content=content, request=request,
                                   reply_to=reply_to or self.config.support.address, files=files))

    def _send(self, mail: Outgoing) -> str | None:
        """Enqueue ``mail``; its Message-ID, or None when the outbox refused it.

        The outbox refuses a recipient that is not one plain address (a row
        stored before addresses were checked, or a bug upstream). The step goes
        on without that mail (a timer closing many requests must not fail for
        one), and the refusal is logged and written into the request's trail.
        """
        try:
            return enqueue(self.session, self.config, self._tagged(mail), self.now)
        except InvalidRecipient as exc:
            log.error("%s%s", f"{mail.request.number}: " if mail.request else "", exc)
            record(self.session, mail.request, "mail_not_sent", actor="system", at=self.now,
                   mail=mail.kind, to=list(mail.to), reason=str(exc))
            return None

    def _tagged(self, mail: Outgoing) -> Outgoing:
        """Mail about a request linked to an incident carries ``[INC-…]`` in its subject, to
        anyone (regulation §5: «Номер инцидента добавляется в заголовок письма в квадратных
        скобках»): the replies come back to the request by it too."""
        request = mail.request
        if request is None or request.incident_id is None:
            return mail
        with self.session.no_autoflush:
            incident = self.session.get(Incident, request.incident_id)
        subject = tag_subject(mail.content.subject, request.number, incident.number)
        return replace(mail, content=replace(mail.content, subject=subject))

    def customer_thread(self, request: Request) -> Thread:
        """In-Reply-To and References that keep the customer's own thread.

        The thread is the request's messages in the order they were written: the
        customer's and our answers to them, with this batch's own mail (still in
        the outbox :class:`~mailbot.outbox.Queue`) in its place by time.
        """
        written = self.session.execute(
            select(Message.created_at, Message.message_id).where(
                Message.request == request, Message.message_id.is_not(None),
                ((Message.direction == "in") & (Message.sender == request.requester_email))
                | Message.kind.in_(CUSTOMER_THREAD_KINDS))
            .order_by(Message.id)).all()
        queue = Queue.of(self.session)
        queued = [(q.at, q.composed.message_id) for q in (queue.of_request(request) if queue else ())
                  if q.mail.kind in CUSTOMER_THREAD_KINDS]
        ids = [mid for _, mid in heapq.merge(written, queued, key=itemgetter(0))]
        references = tuple(dict.fromkeys(
            ([request.thread_message_id] if request.thread_message_id else []) + ids))
        return (references[-1] if references else None), references[-20:]

    def files_for_staff(self, message: Message | None
                        ) -> tuple[list[tuple[AttachmentRow, bool]], tuple[AttachmentRow, ...]]:
        """Every file of ``message`` (with: is it attached?) and those attached, within the limit."""
        if message is None:
            return [], ()
        budget, files, attached = self.config.limits.notify_attachment_bytes, [], []
        for row in message.attachments:
            fits = row.size <= budget
            if fits:
                budget -= row.size
                attached.append(row)
            files.append((row, fits))
        return files, tuple(attached)

    def customer_text(self, request: Request) -> str:
        """The customer's latest words in the request (remembered for this workflow step)."""
        if request not in self._customer_text:
            self._customer_text[request] = self.session.scalar(
                select(Message.body).where(Message.request == request,
                                           Message.direction == "in", Message.kind == "human",
                                           Message.sender == request.requester_email)
                .order_by(Message.id.desc()).limit(1)) or ""
        return self._customer_text[request]

    def context(self, request: Request, **extra) -> dict:
        organization = self.lookup.directory.get_organization(request.organization_id) \
            if request.organization_id else None
        contract = (self.lookup.directory.active_contract(organization.id, self.now)
                    if organization else None)
        assignee = self.session.get(Staff, request.assignee_id) if request.assignee_id else None
        tz = ZoneInfo(self.config.timezone)
        unreachable = self.lookup.undeliverable(request.requester_email) \
            if request.requester_email else None
        if unreachable is not None:  # how else to reach the customer
            extra.setdefault("phones", self.lookup.phones(request))
        return {"request": request, "customer_text": self.customer_text(request),
                "undeliverable": unreachable, "identity_doubt": self.lookup.identity_doubt(request),
                "forged": self.forged.get(request, ""),
                "organization": organization, "contract": contract,
                "assignee": assignee, "support": self.config.support,
                "norm": self.config.sla.norm(request.level) if request.level else None,
                "due": request.due_at.astimezone(tz) if request.due_at else None,
                "received": request.received_at.astimezone(tz), **extra}

