"""Applying the rules' verdict on one incoming message to the register."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from ..config import Config
from ..models import Message, Request
from ..outbox import Outgoing, enqueue
from ..parsers import ParsedMail
from ..render import render
from ..rules import Action, Verdict
from ..rules.verdict import Role
from .numbering import next_request_number
from .states import Status, change_status, record
from .trail import record_incoming


@dataclass
class Intake:
    """One transaction's worth of register changes for incoming mail."""

    session: Session
    config: Config
    now: datetime

    def apply(self, inbound_id: int, mail: ParsedMail, verdict: Verdict) -> Message:
        if verdict.action is Action.NEW_REQUEST:
            return self.new_request(inbound_id, mail, verdict)
        if verdict.action is Action.APPEND and verdict.request is not None:
            return self.append(inbound_id, mail, verdict, verdict.request)
        return record_incoming(self.session, mail, inbound_id, None)

    def new_request(self, inbound_id: int, mail: ParsedMail, verdict: Verdict) -> Message:
        """Register the request, keep the mail, acknowledge it (when allowed)."""
        contact = verdict.contact
        year = self.now.astimezone(ZoneInfo(self.config.timezone)).year
        request = Request(
            number=next_request_number(self.session, self.config.support.request_prefix, year),
            organization_id=verdict.organization.id if verdict.organization else None,
            contact_id=contact.id if contact else None,
            requester_email=mail.from_addr,
            requester_name=(contact.full_name if contact and contact.full_name else mail.from_name),
            channel="email", subject=mail.subject, status=Status.NEW.value,
            thread_message_id=mail.message_id, received_at=self.now,
            created_at=self.now, updated_at=self.now)
        self.session.add(request)
        self.session.flush()
        message = record_incoming(self.session, mail, inbound_id, request)
        actor = mail.from_addr or "unknown"
        record(self.session, request, "created", actor=actor, at=self.now,
               message_id=message.id, channel="email", reasons=verdict.reasons)
        change_status(self.session, request, Status.OPEN, actor="system", at=self.now,
                      message_id=message.id)
        if verdict.may_auto_reply:
            self.acknowledge(request, mail)
        return message

    def append(self, inbound_id: int, mail: ParsedMail, verdict: Verdict,
               request: Request) -> Message:
        """Add a reply to its request; a customer's answer reopens a request waiting for it."""
        message = record_incoming(self.session, mail, inbound_id, request)
        actor = verdict.staff.login if verdict.staff else (mail.from_addr or "unknown")
        record(self.session, request, "message_in", actor=actor, at=self.now,
               message_id=message.id, mail_kind=mail.kind.value, reasons=verdict.reasons)
        if verdict.role is not Role.STAFF and request.status == Status.AWAITING_CUSTOMER.value:
            change_status(self.session, request, Status.OPEN, actor=actor, at=self.now,
                          message_id=message.id)
        return message

    def acknowledge(self, request: Request, mail: ParsedMail) -> Message:
        """The automatic acknowledgement with the request number, in the customer's thread."""
        content = render("ack", request=request, mail=mail, support=self.config.support)
        references = tuple(mail.references) + ((mail.message_id,) if mail.message_id else ())
        target = mail.reply_to or mail.from_addr
        return enqueue(self.session, self.config, Outgoing(
            kind="ack", to=(target,), content=content, request_id=request.id,
            in_reply_to=mail.message_id, references=references), self.now)
