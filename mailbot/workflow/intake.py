"""Applying the rules' verdict on one incoming message to the register."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from ..config import Config
from ..parsers import MailKind, ParsedMail
from ..register.lookup import Lookup
from ..register.models import Delivery, FileRequest, Message, Request, Staff
from ..register.status import Status
from ..rules import Action, Confirmation, Role, Untrusted, Verdict
from ..rules.confirmation import ReplyKind, ReplyReading
from ..rules.level import assess
from .actions import Thread, Workflow
from .deliveries import unsettled
from .escalation import Escalations, Tp2Reply
from .op2 import Op2
from .reports import apply_report
from .staff import StaffReply
from .states import record
from .trail import record_follow_up, record_incoming

ANSWERED = (Status.AWAITING_CUSTOMER.value, Status.RESOLVED.value)
AUTO_REPLY_CAP = "auto-reply-cap"  # the subject of the alert that the backscatter cap was reached


@dataclass
class Intake:
    """One message's worth of register changes, in the caller's transaction."""

    session: Session
    config: Config
    now: datetime
    lookup: Lookup | None = None  # the rules' lookup, when they ran on this message

    def __post_init__(self) -> None:
        self.workflow = Workflow(self.session, self.config, self.now, self.lookup)

    def apply(self, inbound_id: int | None, mail: ParsedMail, verdict: Verdict) -> Message:
        if verdict.action is Action.NOTE:
            return self.untrusted(inbound_id, mail, verdict)
        if verdict.action is Action.NEW_REQUEST:
            message = self.new_request(inbound_id, mail, verdict, channel="email")
        elif verdict.action is Action.APPEND and verdict.request is not None:
            message = self.append(inbound_id, mail, verdict, verdict.request)
        elif verdict.action is Action.ESCALATE:
            message = self.escalation(inbound_id, mail, verdict)
        elif verdict.action is Action.TP2_ANSWER:
            message = self.tp2_answer(inbound_id, mail, verdict)
        else:
            message = record_incoming(self.session, mail, inbound_id, None, self.now)
            if verdict.action is Action.REPORT:
                apply_report(self.workflow, mail, message)
            elif verdict.action is Action.STAFF_HELP:
                self.workflow.help_staff(mail.author, mail=mail, template=(
                    "tp2_help" if verdict.mailbox == "tp2" else "staff_help"))
        if verdict.auto_reply_cap_reached:
            self.workflow.alert(AUTO_REPLY_CAP, "staff_auto_reply_cap", to=self.config.support.tp1_address,
                                message=message, limit=self.config.support.unknown_auto_reply_limit_per_hour,
                                number=message.request.number if message.request else None)
        return message

    # ------------------------------------------------------------ mail that may not act

    def untrusted(self, inbound_id: int | None, mail: ParsedMail, verdict: Verdict) -> Message:
        """Kept on its request (when it names one) as a note; staff told (once per sender and
        hour); nothing changes and nothing goes to the sender.

        Unauthenticated staff mail goes to ТП1 (the group watches for forgeries); a
        stranger's mail on a request to its assignee (or ТП1).
        """
        request, sender = verdict.request, mail.author or "unknown"
        message = record_incoming(self.session, mail, inbound_id, request, self.now)
        staff = verdict.untrusted is Untrusted.UNAUTHENTICATED_STAFF
        record(self.session, request, f"{verdict.untrusted.value}_mail", actor=sender, at=self.now,
               message=message, reason=verdict.untrusted_reason, reasons=verdict.reasons)
        context = {"mail": mail, "reason": verdict.untrusted_reason, "text": mail.new_text or mail.text,
                   "forged_from": verdict.forged_sender}
        if staff:
            self.workflow.alert(f"staff:{sender}", "staff_unauthenticated", request=request,
                                to=self.config.support.tp1_address, message=message,
                                staff=verdict.staff, settings=self.config.staff, **context)
        else:
            self.workflow.alert(f"sender:{sender}", "staff_stranger", request=request,
                                message=message, **context)
        return message

    # ------------------------------------------------------------ ОП4 (regulation §5)

    def escalation(self, inbound_id: int | None, mail: ParsedMail, verdict: Verdict) -> Message:
        """ТП1's mail to the ТП2 address: ОП4 opened, or added to, or refused (kept on the request
        when one is found, ТП1 told what is missing)."""
        check, staff = verdict.escalation, verdict.staff
        message = record_incoming(self.session, mail, inbound_id, check.request, self.now)
        if check.request is not None:
            record(self.session, check.request, "message_in", actor=staff.login, at=self.now,
                   message=message, mail_kind=mail.kind.value, mailbox="tp2",
                   reasons=verdict.reasons)
        escalations = Escalations(self.workflow)
        files = [row for row in message.attachments if not row.inline]
        if not check.valid:
            escalations.refuse(check, staff, subject=mail.subject, message=message)
        elif check.op4 is not None:
            escalations.follow_up(check.op4, check.request, staff, text=mail.text,
                                  message=message, files=files)
        else:
            escalations.open(check.request, staff, text=mail.text, message=message, files=files,
                             forwarded=True)
        return message

    def tp2_answer(self, inbound_id: int | None, mail: ParsedMail, verdict: Verdict) -> Message:
        """ТП2's mail about an ОП4 request: its commands, and its answer to ТП1."""
        op4 = verdict.request
        message = record_incoming(self.session, mail, inbound_id, op4, self.now)
        record(self.session, op4, "message_in", actor=verdict.staff.login, at=self.now,
               message=message, mail_kind=mail.kind.value, mailbox="tp2", reasons=verdict.reasons)
        Tp2Reply(Escalations(self.workflow), op4, verdict.staff, message).apply(
            verdict.commands, mail.incident_numbers)
        return message

    # ------------------------------------------------------------ customers

    def new_request(self, inbound_id: int | None, mail: ParsedMail, verdict: Verdict,
                    channel: str) -> Message:
        """Register the request; then the regulation's intake: who, may they be helped, how urgent."""
        flow = self.workflow
        contact = verdict.contact
        request = flow.create_request(
            channel=channel, subject=mail.subject, email=mail.author,
            name=(contact.full_name if contact and contact.full_name else verdict.contact_name),
            thread_message_id=mail.message_id, level=verdict.level,
            assessment=verdict.level_assessment, language=mail.language)
        message = record_incoming(self.session, mail, inbound_id, request, self.now)
        flow.heard(request, message)
        if verdict.forged_sender:
            flow.forged[request] = verdict.forged_sender
        actor = mail.author or ("unknown" if channel == "email" else "staff")
        record(self.session, request, "created", actor=actor, at=self.now, message=message,
               channel=channel, level_reason=verdict.level_reason, reasons=verdict.reasons,
               level=verdict.level_assessment.details() if verdict.level_assessment else None,
               **({"forged_from": verdict.forged_sender} if verdict.forged_sender else {}))
        thread = _thread(mail)
        if not verdict.identified and verdict.organization is not None:
            flow.organization_known(request, verdict.organization, actor="system")
        if not verdict.identified and (verdict.organization is None or verdict.contract):
            flow.ask_contact_info(request, actor="system", message=message,
                                  may_auto_reply=verdict.may_auto_reply, mail_thread=thread)
            return message
        if not verdict.identified:  # the organisation is known and has no support period now
            flow.admit(request, contract_ok=False, actor="system", message=message,
                       may_auto_reply=verdict.may_auto_reply, mail_thread=thread)
            return message
        flow.identify(request, verdict.organization, contact, verdict.contact_name, actor="system")
        flow.admit(request, contract_ok=verdict.contract is not None, actor="system",
                   message=message, matches=verdict.incident_matches,
                   may_auto_reply=verdict.may_auto_reply, mail_thread=thread)
        return message

    def append(self, inbound_id: int | None, mail: ParsedMail, verdict: Verdict,
               request: Request) -> Message:
        message = record_incoming(self.session, mail, inbound_id, request, self.now)
        if verdict.role is not Role.STAFF and mail.kind is MailKind.HUMAN:
            self.workflow.heard(request, message)
        actor = verdict.staff.login if verdict.staff else (mail.author or "unknown")
        record(self.session, request, "message_in", actor=actor, at=self.now,
               message=message, mail_kind=mail.kind.value, reasons=verdict.reasons)
        if verdict.role is Role.STAFF:
            self.staff_mail(mail, verdict, request, message)
        elif mail.kind is MailKind.HUMAN:
            self.customer_reply(mail, verdict, request, message)
        return message

    def staff_mail(self, mail: ParsedMail, verdict: Verdict, request: Request,
                   message: Message) -> None:
        """Meant for the customer: its commands and its answer; else an internal note
        (rules/staff.py, ``StaffAddressing``). Automatic staff mail only joins the trail."""
        if verdict.internal and mail.kind is MailKind.HUMAN:
            self.workflow.note(request, verdict.staff, mail.new_text or mail.text, message,
                               how=verdict.internal, recipients=(*mail.to, *mail.cc))
        elif verdict.commands is not None:
            StaffReply(self.workflow, request, verdict.staff, message).apply(verdict.commands)

    def customer_reply(self, mail: ParsedMail, verdict: Verdict, request: Request,
                       message: Message) -> None:
        """A customer writes again: contact details, a confirmation, files, thanks, or more
        about the problem (how the reply reads: rules/confirmation.py).

        Only an explicit confirmation closes (when nothing holds the request up); with a new
        question it also opens a request for it, linked to this one. Thanks alone leave the
        request waiting; an unclear reply goes to the assignee with the bot's reading. Anything
        else reopens an answered or closed request and goes to the assignee: no question is lost.
        """
        flow, actor = self.workflow, mail.author or "unknown"
        if request.status == Status.AWAITING_CONTACT_INFO.value:
            self.contact_details(mail, verdict, request, message)
            return
        reading = verdict.reading or ReplyReading(ReplyKind.MORE)
        files = self.files(mail, verdict, request, message)
        if files.closed:  # ОП2: its files confirmed, the request closed by the receipt
            if reading.question:
                self.follow_up(mail, verdict, request, message, reading.question)
            return
        status, settled = request.status, not files.not_received and not files.arrived
        if (reading.confirms and status in ANSWERED and settled
                and not unsettled(self.session, request)):
            self.confirmed(mail, verdict, request, message, reading)
            return
        if status == Status.CLOSED.value and reading.kind is ReplyKind.CONFIRMED_AND_ASKS:
            self.follow_up(mail, verdict, request, message, reading.question)
            return
        quiet = (ReplyKind.CONFIRMED, ReplyKind.THANKS) if status == Status.CLOSED.value \
            else (ReplyKind.THANKS,)
        if settled and status in (*ANSWERED, Status.CLOSED.value) and (
                reading.kind in quiet or reading.kind is ReplyKind.UNCLEAR):
            self.waits(mail, request, message, reading, files)
            return
        if verdict.confirmation is Confirmation.REJECTED and status in ANSWERED:
            request.confirmation = "rejected"
            record(self.session, request, "not_confirmed", actor=actor, at=self.now,
                   message=message)
            Escalations(flow).customer_result(request, "not_helped", actor=actor,
                                              message=message, text=mail.new_text or mail.text)
        if status == Status.CLOSED.value and verdict.contract_checked and verdict.contract is None:
            self.out_of_contract(mail, verdict, request, message)
            return
        if status in (*ANSWERED, Status.CLOSED.value):
            flow.reopen(request, actor=actor, reason="customer wrote again", message=message,
                        customer_waits=True)
        flow.notify_staff(request, "staff_customer_reply", mail=mail, reading=reading, waits=False,
                          not_helped=verdict.confirmation is Confirmation.REJECTED,
                          not_received=files.not_received, received=files.confirmed,
                          arrived=[f.asked for f in files.arrived], message=message)

    def out_of_contract(self, mail: ParsedMail, verdict: Verdict, request: Request,
                        message: Message) -> None:
        """The customer writes to a closed request after the organisation's support period
        ended: it stays closed, the customer gets the refusal, the assignee the mail
        (``#открыть`` reopens it all the same)."""
        record(self.session, request, "reopen_refused", actor=mail.author or "unknown",
               at=self.now, message=message, reason="no active support contract")
        if verdict.may_auto_reply:
            self.workflow.tell_customer(request, "no_contract", automatic=True,
                                        thread=_thread(mail), reopening=True)
        self.workflow.notify_staff(request, "staff_event", event="reopen_refused", mail=mail)

    def confirmed(self, mail: ParsedMail, verdict: Verdict, request: Request, message: Message,
                  reading: ReplyReading) -> None:
        """The customer confirmed: closed; a new question in the same reply gets its own request,
        whose acknowledgement then tells the customer both (no closing notice besides)."""
        flow, actor = self.workflow, mail.author or "unknown"
        request.confirmation = "confirmed"
        record(self.session, request, "confirmed", actor=actor, at=self.now,
               message=message, **reading.details())
        asks = reading.kind is ReplyKind.CONFIRMED_AND_ASKS
        flow.close(request, actor=actor, reason="confirmed", message=message, tell=not asks)
        new = self.follow_up(mail, verdict, request, message, reading.question) if asks else None
        flow.notify_staff(request, "staff_event", event="confirmed", mail=mail, follow_up=new)
        Escalations(flow).customer_result(request, "confirmed", actor=actor, message=message,
                                          text=mail.new_text or mail.text)

    def waits(self, mail: ParsedMail, request: Request, message: Message, reading: ReplyReading,
              files: FilesInReply) -> None:
        """Thanks (or a confirmation of a closed request) change nothing: the request keeps
        waiting (or stays closed), recorded. An unclear reply goes to the assignee with the
        bot's reading, for one command to decide; so do files the reply confirmed."""
        unclear = reading.kind is ReplyKind.UNCLEAR
        record(self.session, request, "unclear_reply" if unclear else "acknowledged",
               actor=mail.author or "unknown", at=self.now, message=message, **reading.details())
        if unclear or files.confirmed:
            self.workflow.notify_staff(request, "staff_customer_reply", mail=mail, reading=reading,
                                       waits=True, not_helped=False, not_received=[],
                                       received=files.confirmed, arrived=[], message=message)

    def contact_details(self, mail: ParsedMail, verdict: Verdict, request: Request,
                        message: Message) -> None:
        """The answer to our question for the company and the ФИО (regulation §2–4).

        A ФИО found is kept even when the company is not: ТП1 then sees the person's name,
        not the mailbox's, and ``#организация`` completes the intake with it.
        """
        flow, actor = self.workflow, mail.author or "unknown"
        if verdict.identified:
            flow.identify(request, verdict.organization, verdict.contact,
                          verdict.contact_name, actor=actor)
            flow.admit(request, contract_ok=verdict.contract is not None, actor=actor,
                       message=message, may_auto_reply=verdict.may_auto_reply)
            return
        if verdict.contact_name and verdict.contact_name != request.requester_name:
            request.requester_name = verdict.contact_name
            record(self.session, request, "contact_name", actor=actor, at=self.now,
                   message=message, contact=verdict.contact_name)
        flow.notify_staff(request, "staff_event", event="contact_unknown", mail=mail,
                          found=verdict.organization)

    def follow_up(self, mail: ParsedMail, verdict: Verdict, old: Request, reply: Message,
                  question: str) -> Request:
        """A new question in a reply that confirmed ``old``: a request of its own, linked to
        ``old`` (``follows_id``), with the question as its text, for the same customer and
        organisation; the usual intake follows (level, contract, known errors, the
        acknowledgement naming both numbers, the assignee of ``old`` when eligible)."""
        flow, actor = self.workflow, mail.author or "unknown"
        contact = verdict.contact
        name = (contact.full_name if contact and contact.full_name
                else old.requester_name if mail.author == old.requester_email else "")
        assessment = assess("\n" + question, self.config.classify)
        request = flow.create_request(
            channel="email", subject=" ".join(question.split())[:120], email=mail.author,
            name=name, thread_message_id=mail.message_id, level=assessment.level,
            assessment=assessment, language=old.language)
        request.follows_id = old.id
        message = record_follow_up(self.session, mail, question, request, self.now)
        flow.heard(request, message)
        record(self.session, request, "created", actor=actor, at=self.now, message=message,
               channel="email", follows=old.number, level_reason=assessment.reason,
               level=assessment.details())
        record(self.session, old, "follow_up", actor=actor, at=self.now, message=reply,
               number=request.number, question=question)
        organization = (flow.lookup.directory.get_organization(old.organization_id)
                        if old.organization_id else None)
        if organization is None:
            flow.ask_contact_info(request, actor="system", message=message,
                                  may_auto_reply=verdict.may_auto_reply, mail_thread=_thread(mail))
            return request
        flow.identify(request, organization, contact, name, actor="system")
        contract = flow.lookup.directory.active_contract(organization.id, self.now)
        matches = flow.lookup.search_incidents(request.subject + "\n" + question) \
            if request.level == 3 else []
        previous = self.session.get(Staff, old.assignee_id) if old.assignee_id else None
        flow.admit(request, contract_ok=contract is not None, actor="system", message=message,
                   matches=matches, may_auto_reply=verdict.may_auto_reply,
                   mail_thread=_thread(mail), prefer=previous)
        return request

    def files(self, mail: ParsedMail, verdict: Verdict, request: Request,
              message: Message) -> "FilesInReply":
        """ОП2 in a customer's reply: files asked for that it brings, files sent that it
        confirms ("получили"; a "помогло" confirms them too) or says did not arrive.

        A reply that confirms receipt closes an answered ОП2 request (§3), and a new
        question in it becomes a request of its own (:meth:`follow_up`); one that says
        the problem remains, or reads unclear, goes to the assignee instead.
        """
        op2, actor = Op2(self.workflow), mail.author or "unknown"
        found = FilesInReply(arrived=op2.files_arrived(request, mail, message))
        words = mail.new_text
        if verdict.receipt is Confirmation.REJECTED:
            found.not_received = op2.not_received(request, by=actor, message=message, words=words)
        elif verdict.receipt is Confirmation.CONFIRMED or (
                verdict.confirmation is Confirmation.CONFIRMED and request.status in ANSWERED):
            found.confirmed = op2.confirm_all(request, "reply", by=actor, message=message)
        unsure = verdict.reading is not None and verdict.reading.kind in (ReplyKind.REJECTED,
                                                                          ReplyKind.UNCLEAR)
        if (verdict.receipt is Confirmation.CONFIRMED and found.confirmed and not found.arrived
                and not unsure):
            found.closed = op2.close_if_done(request, by=actor, message=message,
                                             tell=not (verdict.reading and verdict.reading.question))
        return found


@dataclass
class FilesInReply:
    """What a customer's reply did to the request's ОП2 records."""

    arrived: list[FileRequest] = field(default_factory=list)  # file requests it answered
    confirmed: list[Delivery] = field(default_factory=list)  # deliveries it confirmed
    not_received: list[Delivery] = field(default_factory=list)  # deliveries it failed
    closed: bool = False  # the request closed: its files are all confirmed


def _thread(mail: ParsedMail) -> Thread:
    """In-Reply-To and References for an answer to ``mail``."""
    if not mail.message_id:
        return None, ()
    return mail.message_id, (*mail.references, mail.message_id)
