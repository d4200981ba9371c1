"""Requests from other channels (phone, web site, intranet portal), registered by staff.

They take the same path as mail: the intake rules decide (contract, level,
known errors) and the workflow opens, acknowledges (by mail, when the
customer's address is known), assigns and notifies.
"""
from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy.orm import Session

from ..config import Config
from ..parsers import MailKind, ParsedMail, ParseOptions, parse_mail
from ..parsers.addresses import is_valid_address
from ..parsers.commands import CommandBlock, Problem, parse_commands, problem
from ..register.lookup import Lookup
from ..register.models import Inbound, Message, Request, Staff
from ..rules import MANUAL_INTAKE, Action, Context, Role, Verdict, decide
from .escalation import Escalations, Tp2Reply
from .intake import Intake
from .staff import StaffReply, find_organization
from .states import record
from .trail import record_incoming

CHANNELS = ("phone", "web", "portal", "email")


@dataclass(frozen=True)
class ManualRequest:
    channel: str
    text: str
    subject: str = ""
    organization: str = ""  # CRM id or name
    contact_name: str = ""  # ФИО
    email: str = ""
    level: int | None = None


class ManualError(ValueError):
    """The request cannot be registered as given; the message says why."""


def register(session: Session, config: Config, now, given: ManualRequest) -> Request:
    """Register a request taken by phone, from the web site or the portal."""
    if given.channel not in CHANNELS:
        raise ManualError(f"channel must be one of {', '.join(CHANNELS)}")
    lookup = Lookup(session, config.timezone)
    email = given.email.strip().lower()
    if email and not is_valid_address(email):
        raise ManualError(f"not one plain e-mail address: {given.email!r}")
    contact = lookup.directory.find_contact(email) if email else None
    organization = find_organization(lookup, given.organization) if given.organization else None
    if given.organization and organization is None:
        raise ManualError(f"no organisation {given.organization!r} in the CRM")
    if organization is None and contact and contact.organization_id:
        organization = lookup.directory.get_organization(contact.organization_id)
    subject = given.subject or given.text.strip().split("\n", 1)[0][:120]
    mail = ParsedMail(
        message_id=None, in_reply_to=(), references=(), subject=subject, from_addr=email,
        from_name=given.contact_name, reply_to=None, to=(), cc=(), date=None, return_path=None,
        text=given.text, html=None, new_text=given.text, attachments=(), kind=MailKind.HUMAN,
        kind_reason=f"registered by staff ({given.channel})", request_numbers=(),
        incident_numbers=(), from_header=(email,) if email else ())
    verdict = Verdict(action=Action.NEW_REQUEST, role=Role.CUSTOMER, contact=contact,
                      organization=organization, contact_name=given.contact_name)
    verdict = decide(mail, Context(config, lookup, now), MANUAL_INTAKE, verdict)
    if given.level:
        verdict.level, verdict.level_reason = given.level, "set by staff"
        verdict.level_assessment = None
    verdict.may_auto_reply = bool(email)
    message = Intake(session, config, now).new_request(None, mail, verdict, channel=given.channel)
    return message.request


def run_commands(session: Session, config: Config, now, request: Request, staff: Staff,
                 block: CommandBlock, message: Message | None = None) -> list[Problem]:
    """What a staff reply with these commands would do, from the command line: a ТП2 member's
    act on the request's ОП4 (as their mail to the ТП2 address would)."""
    flow = Intake(session, config, now).workflow
    if staff.tier == "tp2":
        op4 = flow.lookup.op4_of(request, closed_too=True)
        if op4 is None:
            return [problem("", "no_op4", number=request.number)]
        return Tp2Reply(Escalations(flow), op4, staff, message, notify_errors=False).apply(block)
    return StaffReply(flow, request, staff, message, notify_errors=False).apply(block)


def send_files(session: Session, config: Config, now: datetime, request: Request, staff: Staff,
               files: Sequence[tuple[str, bytes]], text: str = "", description: str = "") -> list[Problem]:
    """What ``#файлы`` with these files attached would do, from the command line (``mailbot
    requests send-files``); the problems found, nothing done when there are any.

    A file lives in the raw mail it came in (:mod:`mailbot.register.files`), and a file given on
    the command line came in none: the files are wrapped in a mail from the staff member
    to the support address, stored in ``inbound`` as already processed (source ``cli``),
    and recorded in the request's trail as that staff member's message, as if mailed.
    Raises :class:`~mailbot.parsers.MailTooLarge` beyond the ``[limits]``.
    """
    message_id = make_msgid(domain=config.support.address.rpartition("@")[2] or "localhost")
    raw = _files_mail(config, request, staff, files, text, now, message_id)
    mail = parse_mail(raw, ParseOptions(
        request_prefix=config.support.request_prefix, incident_prefix=config.support.incident_prefix,
        max_attachment_bytes=config.limits.max_attachment_bytes,
        max_attachments=config.limits.max_attachments,
        max_message_bytes=config.limits.max_message_bytes))
    inbound = Inbound(dedup_key=f"mid:{message_id.strip('<>')}", source="cli", raw=raw, size=len(raw),
                      status="processed", received_at=now, processed_at=now)
    session.add(inbound)
    session.flush()
    message = record_incoming(session, mail, inbound.id, request, now)
    record(session, request, "message_in", actor=staff.login, at=now, message=message,
           mail_kind="cli", files=[a.filename for a in mail.attachments])
    block = parse_commands(f"#файлы {description}".strip() + "\n\n" + text)
    return run_commands(session, config, now, request, staff, block, message)


def _files_mail(config: Config, request: Request, staff: Staff, files: Sequence[tuple[str, bytes]],
                text: str, now: datetime, message_id: str) -> bytes:
    """The staff member's files in a mail to the support address (the way they are stored)."""
    mail = EmailMessage()
    mail["From"], mail["To"] = staff.email, config.support.address
    mail["Subject"] = f"[{request.number}] send-files"
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = message_id
    mail.set_content(text or "")
    for name, data in files:
        maintype, _, subtype = (mimetypes.guess_type(name)[0] or "application/octet-stream").partition("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return mail.as_bytes()
