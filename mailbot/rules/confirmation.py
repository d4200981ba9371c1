"""How a customer's reply reads: a confirmation, a refusal, thanks, a new question; files received.

Regulation §2–4: a request closes when the customer confirms the solution. Only an explicit
confirmation confirms ("помогло", "проблема решена", "всё работает"): thanks alone, "посмотрим",
"попробуем" confirm nothing, and the request waits. A question or a request in the reply is
never lost: with a confirmation it becomes a new request linked to the old one, without one
it reopens the request. What the bot cannot read with confidence (a hedged confirmation,
"сделали, как вы написали" with no result) goes to the assignee with the bot's reading.

The phrases are ``[workflow]`` settings; only the reply's new text counts (quoted history
and signature removed). docs/workflow.md has the rules with examples.

ОП2: whether the files sent arrived ("файлы получили") or not ("не получили") is read
apart (:class:`ReceiptDetection`, ``[delivery]`` phrases).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import lru_cache

from ..config import ClassifyConfig, WorkflowConfig
from ..parsers import MailKind, ParsedMail
from ..register.status import Status
from .base import Context, Rule
from .level import assess
from .verdict import Action, Confirmation, Role, Verdict

WAITING = (Status.RESOLVED.value, Status.AWAITING_CUSTOMER.value)  # answered: the customer's turn
READ = (*WAITING, Status.CLOSED.value)
MAX_READ = 10_000  # characters of a reply's new text that are read
SENTENCE = re.compile(r"(?<=[.!?…;])\s+|\n+")
WORD = re.compile(r"[a-zа-я]{3,}")
# words that carry no request of their own in a reply ("спасибо за быстрый ответ по правам")
FILLER = frozenset((
    "вам", "вас", "ваш", "вашу", "ваше", "вашей", "за", "ответ", "ответы", "помощь", "информацию",
    "решение", "консультацию", "разъяснение", "разъяснения", "оперативность", "быстрый",
    "оперативный", "подробный", "большое", "огромное", "все", "всё", "это", "так", "уже",
    "очень", "еще", "ещё", "добрый", "день", "доброе", "утро", "вечер", "здравствуйте", "уважением",
    "всего", "доброго", "хорошего", "коллеги", "пожалуйста", "сегодня", "завтра", "утром", "днем",
    "вечером", "позже", "потом", "тогда", "обязательно", "for", "the", "your", "you", "help",
    "answer", "and", "hello", "regards", "best"))


class ReplyKind(str, enum.Enum):
    CONFIRMED = "confirmed"  # an explicit confirmation, nothing new
    CONFIRMED_AND_ASKS = "confirmed_and_asks"  # a confirmation and a new question or request
    REJECTED = "rejected"  # "не помогло"
    THANKS = "thanks"  # thanks, "посмотрим", "попробуем": no confirmation, nothing new
    UNCLEAR = "unclear"  # a hedged confirmation, or something done with no result said
    MORE = "more"  # a question, a request or more about the problem, without a confirmation


@dataclass(frozen=True)
class ReplyReading:
    """What the reply says, the words that decided, and its new question (if any)."""

    kind: ReplyKind
    words: tuple[str, ...] = ()  # the reply's phrases that decided, as found (lower case)
    question: str = ""  # the sentences that ask or report something new (a question, a request)

    @property
    def confirms(self) -> bool:
        return self.kind in (ReplyKind.CONFIRMED, ReplyKind.CONFIRMED_AND_ASKS)

    def details(self) -> dict:
        """For the audit trail."""
        return {"reading": self.kind.value, "words": list(self.words), "question": self.question}


@lru_cache(maxsize=32)
def _pattern(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    alternatives = "|".join(sorted((re.escape(_fold(p)) for p in phrases), key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")


def _fold(text: str) -> str:
    return text.lower().replace("ё", "е")


def _found(phrases: tuple[str, ...], text: str) -> list[str]:
    pattern = _pattern(phrases)
    return pattern.findall(text) if pattern else []


def _strip(phrases: tuple[str, ...], text: str) -> str:
    pattern = _pattern(phrases)
    return pattern.sub(" ", text) if pattern else text


def read_reply(text: str, workflow: WorkflowConfig, classify: ClassifyConfig,
               receipts: tuple[str, ...] = ()) -> ReplyReading:
    """Read the new text of a customer's reply (see the module's docstring); ``receipts``:
    the phrases that confirm files arrived ("файлы получили"), which say nothing new either.
    Only the first ``MAX_READ`` characters are read: a reply says what it means at its start,
    and a pasted log (or a hostile megabyte) would only cost time."""
    text = text[:MAX_READ]
    folded = _fold(text)
    negative = _found(workflow.confirm_negative, folded)
    if negative:
        return ReplyReading(ReplyKind.REJECTED, tuple(negative))
    positive = _found(workflow.confirm_positive, folded)
    hedges = _found(workflow.confirm_hedges, folded) if positive else []
    done = _found(workflow.done_phrases, folded)
    thanks = _found(workflow.acknowledgements, folded) + _found(receipts, folded)
    courtesy = (*workflow.confirm_positive, *workflow.confirm_hedges, *workflow.acknowledgements,
                *workflow.done_phrases, *receipts)  # one pattern: the longest phrase first
    asking, telling = [], []
    for sentence in (s.strip() for s in SENTENCE.split(text)):
        rest = _strip(courtesy, _fold(sentence))
        words = [w for w in WORD.findall(rest) if w not in FILLER]
        if not words:
            continue
        if "?" in sentence or max(assess("\n" + rest, classify).scores) >= classify.weak_score:
            asking.append(sentence)
        elif len(words) >= 2:
            telling.append(sentence)
    question = "\n".join(asking)
    if positive and not hedges:
        kind = ReplyKind.CONFIRMED_AND_ASKS if asking else ReplyKind.CONFIRMED
        return ReplyReading(kind, tuple(positive), question)
    if asking or (telling and not done):
        return ReplyReading(ReplyKind.MORE, tuple(positive + hedges), question)
    if positive or done:
        return ReplyReading(ReplyKind.UNCLEAR, tuple(positive + hedges + done))
    if thanks:
        return ReplyReading(ReplyKind.THANKS, tuple(thanks))
    return ReplyReading(ReplyKind.MORE)


class ConfirmationDetection(Rule):
    """Read a customer's reply to an answered or closed request (:func:`read_reply`).

    A confirmation (or a refusal) is also the verdict's :attr:`~Verdict.confirmation`, as
    the ОП2 steps read it ("помогло" confirms the files sent too).
    """

    name = "confirmation-detection"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        request = verdict.request
        if (verdict.action is not Action.APPEND or verdict.role is Role.STAFF
                or request is None or request.status not in READ or mail.kind is not MailKind.HUMAN):
            return
        config = context.config
        verdict.reading = read_reply(mail.new_text, config.workflow, config.classify,
                                     config.delivery.receipt_positive)
        if request.status in WAITING and verdict.reading.kind is ReplyKind.REJECTED:
            verdict.confirmation = Confirmation.REJECTED
        elif request.status in WAITING and verdict.reading.confirms:
            verdict.confirmation = Confirmation.CONFIRMED
        verdict.note(self.name, verdict.reading.kind.value
                     + (f" ({', '.join(verdict.reading.words)})" if verdict.reading.words else ""))


def detect_confirmation(text: str, positive: tuple[str, ...],
                        negative: tuple[str, ...]) -> Confirmation | None:
    """Negative phrases win: "спасибо, но архив не открывается" is no receipt."""
    folded = _fold(text)
    if _found(negative, folded):
        return Confirmation.REJECTED
    if _found(positive, folded):
        return Confirmation.CONFIRMED
    return None


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
