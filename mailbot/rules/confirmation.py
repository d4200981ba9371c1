"""Did the customer confirm that the solution works ("помогло") or not ("не помогло")?
And that the files sent arrived ("файлы получили") or not ("не получили", ОП2)?"""
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


RECEIVING = (Status.OPEN.value, Status.AWAITING_CUSTOMER.value, Status.RESOLVED.value,
             Status.ESCALATED_OP4.value)


class ReceiptDetection(Rule):
    """A customer's reply says the files sent arrived ("файлы получили", "дистрибутив скачали")
    or did not ("не получили", "архив не открывается"); negative phrases win.

    The phrases are ``[delivery]`` settings. Only the new text counts: a reply
    that only quotes our mail would otherwise answer with our own words ("если
    файлы не пришли"). Whether files await a confirmation is the workflow's
    question: the rule only reads the words.
    """

    name = "receipt-detection"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        request = verdict.request
        if (verdict.action is not Action.APPEND or verdict.role is Role.STAFF
                or request is None or request.status not in RECEIVING):
            return
        delivery = context.config.delivery
        verdict.receipt = detect_confirmation(mail.new_text, delivery.receipt_positive,
                                              delivery.receipt_negative)
        if verdict.receipt:
            verdict.note(self.name, f"receipt {verdict.receipt.value}")
