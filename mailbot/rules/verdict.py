"""What the rules decide about one message."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..parsers.commands import CommandBlock
from ..register.crm import ContactInfo, ContractInfo, OrganizationInfo
from ..register.lookup import IncidentMatch
from ..register.models import Request, Staff
from ..register.status import Status

if TYPE_CHECKING:
    from .confirmation import ReplyReading
    from .level import Assessment


class Action(str, enum.Enum):
    NEW_REQUEST = "new_request"  # register a new request
    APPEND = "append"  # add the message to an existing request
    REPORT = "report"  # a DSN or MDN about mail we sent
    STAFF_HELP = "staff_help"  # staff mail that names no request: explain how to answer
    ESCALATE = "escalate"  # ТП1 mail to the ТП2 address: an escalation (ОП4) or more about one
    TP2_ANSWER = "tp2_answer"  # ТП2 mail about an ОП4 request: its commands and its answer to ТП1
    NOTE = "note"  # keep the message (on its request, if any) and tell staff; change nothing
    IGNORE = "ignore"  # keep the message, do nothing else


class Role(str, enum.Enum):
    OWN = "own"  # the bot itself
    STAFF = "staff"
    CUSTOMER = "customer"  # a known contact, or a sender from a known company
    UNKNOWN = "unknown"


class Untrusted(str, enum.Enum):
    """Why a mail may not act (:attr:`Action.NOTE`)."""

    UNAUTHENTICATED_STAFF = "unauthenticated_staff"  # a staff address, not vouched for
    STRANGER = "stranger"  # neither the requester nor a registered contact of its organisation


class Confirmation(str, enum.Enum):
    CONFIRMED = "confirmed"  # "помогло", "работает", "спасибо, решено"
    REJECTED = "rejected"  # "не помогло"


@dataclass(frozen=True)
class DdiCheck:
    """Which parts of the ДДИ (regulation §5) the files hold: part → file names; the required
    parts none holds."""

    found: dict[str, list[str]]
    missing: tuple[str, ...]


@dataclass
class EscalationCheck:
    """Whether a mail (or ``#оп4``) may open ОП4 or add to it, and what is wrong otherwise.

    ``problems`` are codes (the template ``staff_escalation_refused`` words them):
    ``no_number`` (the subject names no request), ``unknown_number``, ``not_open_op3`` (ОП4
    only from an open ОП3 request), ``no_organization`` (the subject does not name the request's
    organisation), ``ddi`` (parts missing), ``no_tp2_staff``, ``already_escalated`` (``#оп4``
    while an ОП4 is under way).
    """

    request: Request | None = None  # the ОП3 request (the mail is kept on it, valid or not)
    op4: Request | None = None  # its ОП4 under way: the mail adds to it
    organization: OrganizationInfo | None = None  # the request's
    problems: list[str] = field(default_factory=list)
    ddi: DdiCheck | None = None

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass
class Verdict:
    action: Action = Action.NEW_REQUEST
    role: Role = Role.UNKNOWN
    mailbox: str = "support"  # whose mail this is: the support address's or ТП2's (rules/mailbox.py)
    staff: Staff | None = None
    contact: ContactInfo | None = None
    organization: OrganizationInfo | None = None
    contact_name: str = ""  # ФИО found in the mail for a sender not yet in the CRM
    contract: ContractInfo | None = None  # the active support contract, when checked and found
    contract_checked: bool = False
    request: Request | None = None
    level: int | None = None  # ОП1–ОП3 proposed for a new request
    level_reason: str = ""
    level_assessment: Assessment | None = None  # how sure, and why (rules/level.py)
    commands: CommandBlock | None = None  # staff commands and the answer text
    internal: str = ""  # staff mail not meant for the customer: why it is an internal note
    confirmation: Confirmation | None = None
    reading: ReplyReading | None = None  # how a customer's reply to an answer reads
    receipt: Confirmation | None = None  # the customer says the files sent arrived, or not (ОП2)
    incident_matches: list[IncidentMatch] = field(default_factory=list)
    escalation: EscalationCheck | None = None  # ТП1 mail to the ТП2 address (Action.ESCALATE)
    may_auto_reply: bool = True
    untrusted: Untrusted | None = None  # with Action.NOTE: why the mail may not act
    untrusted_reason: str = ""
    forged_sender: str = ""  # our receiving server found the From: forged: why (rules/authentication.py)
    auto_reply_cap_reached: bool = False  # automatic mail to unknown addresses is at its hourly cap
    final: bool = False  # no later rule may change the verdict
    reasons: list[str] = field(default_factory=list)

    @property
    def identified(self) -> bool:
        """Company and full name known, as the regulation's intake requires."""
        return self.organization is not None and bool(self.contact or self.contact_name)

    @property
    def intake(self) -> bool:
        """Is this mail an intake step: a new request, or the answer to our contact question?"""
        if self.action is Action.NEW_REQUEST:
            return True
        return (self.action is Action.APPEND and self.request is not None
                and self.request.status == Status.AWAITING_CONTACT_INFO.value)

    @property
    def reopens_closed(self) -> bool:
        """Is this a customer's mail to a closed request (more than thanks reopens it)?"""
        return (self.action is Action.APPEND and self.role is Role.CUSTOMER
                and self.request is not None and self.request.status == Status.CLOSED.value)

    def note(self, rule: str, reason: str) -> None:
        self.reasons.append(f"{rule}: {reason}")

    def stop(self, rule: str, action: Action, reason: str) -> None:
        self.action, self.final = action, True
        self.note(rule, reason)
