"""Rules: small single-purpose deciders, run in a declared order (as Mailman 3's chains).

Each rule has a ``name``, a docstring saying what it decides, and one method,
``check(mail, verdict, context)``, that reads the mail and the register and
records its decision on the :class:`~mailbot.rules.verdict.Verdict`. A rule
never sends mail and never writes a table: the workflow applies the verdict.
"""
from __future__ import annotations

from ..parsers import ParsedMail
from .base import Context, Rule
from .hygiene import AcknowledgementRateLimit, AutomaticMail, OwnMail
from .identity import SenderIdentity
from .conversation import ThreadMatch
from .verdict import Action, Verdict

PIPELINE: tuple[Rule, ...] = (
    OwnMail(),
    AutomaticMail(),
    SenderIdentity(),
    ThreadMatch(),
    AcknowledgementRateLimit(),
)


def decide(mail: ParsedMail, context: Context) -> Verdict:
    """Run every rule in order and return what they decided together."""
    verdict = Verdict()
    for rule in PIPELINE:
        if verdict.final:
            break
        rule.check(mail, verdict, context)
    return verdict


__all__ = ["Action", "Context", "PIPELINE", "Verdict", "decide"]
