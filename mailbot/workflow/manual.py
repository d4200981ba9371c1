"""Requests from other channels (phone, web site, intranet portal), registered by staff.

They take the same path as mail: the intake rules decide (contract, level,
known errors) and the workflow opens, acknowledges (by mail, when the
customer's address is known), assigns and notifies.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ..config import Config
from ..lookup import Lookup
from ..models import Request, Staff
from ..parsers import MailKind, ParsedMail
from ..parsers.addresses import is_valid_address
from ..parsers.commands import CommandBlock
from ..rules import MANUAL_INTAKE, Action, Context, Role, Verdict, decide
from .escalation import Escalations, Tp2Reply
from .intake import Intake
from .staff import StaffReply, find_organization

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
    verdict.may_auto_reply = bool(email)
    message = Intake(session, config, now).new_request(None, mail, verdict, channel=given.channel)
    return message.request


def run_commands(session: Session, config: Config, now, request: Request, staff: Staff,
                 block: CommandBlock) -> list[str]:
    """What a staff reply with these commands would do, from the command line: a ТП2 member's
    act on the request's ОП4 (as their mail to the ТП2 address would)."""
    flow = Intake(session, config, now).workflow
    if staff.tier == "tp2":
        op4 = flow.lookup.op4_of(request, closed_too=True)
        if op4 is None:
            return [f"{request.number} has no ОП4 request (ТП2 acts on ОП4 only)"]
        return Tp2Reply(Escalations(flow), op4, staff, None, notify_errors=False).apply(block)
    return StaffReply(flow, request, staff, None, notify_errors=False).apply(block)
