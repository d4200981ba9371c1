"""What the rules decide about one message."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..models import Contact, Organization, Request, Staff


class Action(str, enum.Enum):
    NEW_REQUEST = "new_request"  # register a new request
    APPEND = "append"  # add the message to an existing request
    REPORT = "report"  # a DSN or MDN about mail we sent
    IGNORE = "ignore"  # keep the message, do nothing else


class Role(str, enum.Enum):
    OWN = "own"  # the bot itself
    STAFF = "staff"
    CUSTOMER = "customer"  # a known contact, or a sender from a known company domain
    UNKNOWN = "unknown"


@dataclass
class Verdict:
    action: Action = Action.NEW_REQUEST
    role: Role = Role.UNKNOWN
    staff: Staff | None = None
    contact: Contact | None = None
    organization: Organization | None = None
    request: Request | None = None
    level: int | None = None  # ОП1–ОП3 proposed for a new request
    level_reason: str = ""
    may_auto_reply: bool = True
    final: bool = False  # no later rule may change the verdict
    reasons: list[str] = field(default_factory=list)

    def note(self, rule: str, reason: str) -> None:
        self.reasons.append(f"{rule}: {reason}")

    def stop(self, rule: str, action: Action, reason: str) -> None:
        self.action, self.final = action, True
        self.note(rule, reason)
