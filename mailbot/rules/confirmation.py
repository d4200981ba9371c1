"""Did the customer confirm that the solution works ("помогло") or not ("не помогло")?"""
from __future__ import annotations

import re
from functools import lru_cache

from ..parsers import ParsedMail
from ..status import Status
from .base import Context, Rule
from .verdict import Action, Confirmation, Role, Verdict

WAITING = (Status.RESOLVED.value, Status.AWAITING_CUSTOMER.value)


@lru_cache(maxsize=8)
def _pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(p.lower().replace("ё", "е")) for p in phrases)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")


def detect_confirmation(text: str, positive: tuple[str, ...],
                        negative: tuple[str, ...]) -> Confirmation | None:
    """Negative phrases win: "спасибо, но не помогло" is not a confirmation."""
    folded = text.lower().replace("ё", "е")
    if negative and _pattern(negative).search(folded):
        return Confirmation.REJECTED
    if positive and _pattern(positive).search(folded):
        return Confirmation.CONFIRMED
    return None


class ConfirmationDetection(Rule):
    """A customer's reply to a solution (or an answer) confirms it or says it did not help."""

    name = "confirmation-detection"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        request = verdict.request
        if (verdict.action is not Action.APPEND or verdict.role is Role.STAFF
                or request is None or request.status not in WAITING):
            return
        workflow = context.config.workflow
        verdict.confirmation = detect_confirmation(mail.new_text or mail.text,
                                                   workflow.confirm_positive,
                                                   workflow.confirm_negative)
        if verdict.confirmation:
            verdict.note(self.name, verdict.confirmation.value)
