"""Rules: small single-purpose deciders, run in a declared order (as Mailman 3's chains).

Each rule has a ``name``, a docstring saying what it decides, and one method,
``check(mail, verdict, context)``, that reads the mail and the register and
records its decision on the :class:`~mailbot.rules.verdict.Verdict`. A rule
never sends mail and never writes a table: the workflow applies the verdict.
"""
from __future__ import annotations

from ..parsers import ParsedMail
from .base import Context, Rule
from .confirmation import ConfirmationDetection, ReceiptDetection
from .contact import ContactDetails
from .contract import ContractCheck
from .authentication import SenderForgery, StaffAuthentication
from .conversation import ReplyOwnership, ThreadMatch
from .escalation import EscalationMail, Tp2Answer
from .hygiene import AcknowledgementRateLimit, AutomaticMail, AutoReplyCap, OwnMail
from .identity import SenderIdentity
from .known_errors import KnownErrorSearch, searched_problems
from .level import LevelClassification
from .mailbox import MailboxRole
from .staff import StaffAddressing, StaffCommands
from .verdict import Action, Confirmation, Role, Untrusted, Verdict

PIPELINE: tuple[Rule, ...] = (
    OwnMail(),
    AutomaticMail(),
    SenderIdentity(),
    MailboxRole(),
    ThreadMatch(),
    StaffAuthentication(),
    SenderForgery(),
    ReplyOwnership(),
    EscalationMail(),
    Tp2Answer(),
    StaffAddressing(),
    StaffCommands(),
    ContactDetails(),
    ContractCheck(),
    LevelClassification(),
    KnownErrorSearch(),
    ConfirmationDetection(),
    ReceiptDetection(),
    AcknowledgementRateLimit(),
    AutoReplyCap(),
)


# Requests registered by staff (phone, web site, portal): the same intake decisions.
MANUAL_INTAKE: tuple[Rule, ...] = (
    ContractCheck(),
    LevelClassification(),
    KnownErrorSearch(),
)


def decide(mail: ParsedMail, context: Context, rules: tuple[Rule, ...] = PIPELINE,
           verdict: Verdict | None = None) -> Verdict:
    """Run the rules in order and return what they decided together."""
    verdict = verdict or Verdict()
    for rule in rules:
        if verdict.final:
            break
        rule.check(mail, verdict, context)
    return verdict


__all__ = ["Action", "Confirmation", "Context", "MANUAL_INTAKE", "PIPELINE", "Role", "Untrusted",
           "Verdict", "decide", "searched_problems"]
