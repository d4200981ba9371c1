"""What kind of message this is (DSN, MDN, auto-reply, bulk, human), and why.

Checked in this order; the first signal wins.  X-Auto-Response-Suppress alone is not an
auto-reply (Outlook sets it on ordinary mail); subjects are matched by phrase, not by
single words, so "Отпуск не начисляется" stays a human request.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .model import MailKind

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|returned mail|mail delivery failed|delivery fail|failure notice|"
    r"non.?deliver|could not be delivered|mail system error|delivery has failed|returned to sender|"
    r"postmaster notify|unzustellbar|nicht zustellbar|übermittlungsstatus|недоставлен|не доставлен|"
    r"не удалось доставить|не может быть доставлено|уведомление о (?:состоянии )?доставк",
    re.I,
)
_BOUNCE_TEXT = re.compile(
    r"did not reach the following recipient|could not be delivered|delivery to the following recipient|"
    r"permanent error|undeliverable|не может быть доставлено|не удалось доставить|не было доставлено",
    re.I,
)
_DAEMON = re.compile(r"(?:mailer-daemon|mail-daemon|mailerdaemon|postmaster)(?:@|$)", re.I)
_AUTO_SUBJECT = re.compile(
    r"\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)?\s*:|auto-?reply|autoresponse|"
    r"abwesenheitsnotiz|automatische antwort|réponse automatique|respuesta automática|"
    r"автоответ|автоматический ответ|отсутствую в офисе|нет на месте|вне офиса)",
    re.I,
)
_VACATION = re.compile(
    r"out of (?:the )?office|on vacation|on holiday|away from (?:the )?office|"
    r"я в отпуске|нахожусь в отпуске|в отпуске до|отсутствую в офисе|отсутствую на рабочем месте",
    re.I,
)
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-autoreply-from", "x-mail-autoreply")
_BOUNCE_TEXT_WINDOW = 3000


@dataclass(frozen=True)
class KindInput:
    """The facts classification looks at."""

    header: Callable[[str], str | None]
    report_type: str | None  # report-type of a top-level multipart/report
    has_delivery_status: bool
    has_disposition: bool
    from_addr: str
    from_name: str
    return_path: str | None
    subject: str
    text: str


def _dsn_reason(facts: KindInput) -> str | None:
    if facts.report_type == "delivery-status":
        return "multipart/report; report-type=delivery-status"
    if facts.has_delivery_status:
        return "message/delivery-status part"
    if facts.header("X-Failed-Recipients"):
        return "X-Failed-Recipients header"
    if facts.header("X-MS-Exchange-Message-Is-Ndr") is not None:
        return "X-MS-Exchange-Message-Is-Ndr header"
    daemon = bool(_DAEMON.match(facts.from_addr)) or "mail delivery" in facts.from_name.lower()
    if (daemon or facts.return_path == "") and _BOUNCE_SUBJECT.search(facts.subject):
        return f"bounce subject {facts.subject[:60]!r} from {facts.from_addr or 'null sender'}"
    if daemon and _BOUNCE_TEXT.search(facts.text[:_BOUNCE_TEXT_WINDOW]):
        return f"bounce text from {facts.from_addr}"
    return None


def _auto_reply_reason(facts: KindInput) -> str | None:
    submitted = (facts.header("Auto-Submitted") or "").strip()
    if submitted and submitted.split(";")[0].strip().lower() != "no":
        return f"Auto-Submitted: {submitted}"
    for name in _AUTO_HEADERS:
        value = facts.header(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return f"{name} header"
    if (facts.header("Precedence") or "").strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    if _AUTO_SUBJECT.match(facts.subject) or _VACATION.search(facts.subject):
        return f"auto-reply subject {facts.subject[:60]!r}"
    return None


def _bulk_reason(facts: KindInput) -> str | None:
    precedence = (facts.header("Precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"Precedence: {precedence}"
    if facts.header("List-Id"):
        return "List-Id header"
    if facts.header("List-Unsubscribe") and precedence:
        return f"List-Unsubscribe with Precedence: {precedence}"
    return None


def classify(facts: KindInput) -> tuple[MailKind, str]:
    """(kind, reason) for one message."""
    reason = _dsn_reason(facts)
    if reason:
        return MailKind.DSN, reason
    if facts.report_type == "disposition-notification" or facts.has_disposition:
        return MailKind.MDN, "multipart/report; report-type=disposition-notification"
    reason = _auto_reply_reason(facts)
    if reason:
        return MailKind.AUTO_REPLY, reason
    reason = _bulk_reason(facts)
    if reason:
        return MailKind.BULK, reason
    return MailKind.HUMAN, "no automation markers"
