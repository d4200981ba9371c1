"""What kind of message this is (DSN, MDN, auto-reply, bulk, human), and why.

Checked in this order; the first signal wins.  X-Auto-Response-Suppress alone is not an
auto-reply (Outlook sets it on ordinary mail); subjects are matched by phrase, not by
single words, so "Отпуск не начисляется" stays a human request.

A vacation or out-of-office notice written in the text alone, with no RFC 3834 header and
no telling subject (a mail client's or a person's own autoresponder), is an auto-reply too
(:func:`vacation_notice`).
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
# An absence now, in the first person or impersonal: "я в отпуске", "нахожусь в командировке",
# "отсутствую в офисе", "меня нет на месте", "I am out of the office"; or the notice naming
# itself ("это автоматический ответ", "this is an automatic reply").
_ABSENT = re.compile(
    r"(?<!\w)(?:я\s+(?:сейчас\s+|в настоящее время\s+|временно\s+)?(?:нахожусь\s+)?"
    r"(?:в\s+(?:ежегодном\s+|очередном\s+|оплачиваемом\s+)?(?:отпуске|командировке|отъезде)"
    r"|на\s+больничном|вне\s+офиса)"
    r"|(?:нахожусь|буду\s+находиться)\s+(?:в\s+(?:ежегодном\s+|очередном\s+|оплачиваемом\s+)?"
    r"(?:отпуске|командировке|отъезде)|вне\s+офиса|на\s+больничном)"
    r"|(?:временно\s+)?отсутствую(?!\w)|меня\s+(?:сейчас\s+)?нет\s+(?:в\s+офисе|на\s+(?:рабочем\s+)?месте)"
    r"|буду\s+(?:в\s+офисе|на\s+(?:связи|работе|рабочем\s+месте)|доступ(?:ен|на))\s+(?:только\s+)?(?:с|после)(?!\w)"
    r"|не\s+(?:смогу|могу)\s+(?:оперативно\s+|сразу\s+)?(?:ответить|прочитать)"
    r"|(?:это|данное)\s+(?:письмо|сообщение|уведомление)\s+(?:отправлено|сформировано|создано)\s+автоматически"
    r"|(?:это\s+)?автоматическ(?:ий|ое)\s+(?:ответ|уведомление|сообщение)"
    r"|i(?:'m|’m|\s+am)\s+(?:currently\s+|now\s+)?(?:out\s+of\s+(?:the\s+)?office|away\s+from\s+(?:the\s+|my\s+)?"
    r"(?:office|desk)|on\s+(?:annual\s+|parental\s+|sick\s+|maternity\s+|business\s+)?(?:leave|vacation|holiday|trip)"
    r"|travell?ing|away)"
    r"|i\s+will\s+be\s+(?:out\s+of\s+(?:the\s+)?office|away|on\s+(?:leave|vacation|holiday))"
    r"|^\s*out\s+of\s+(?:the\s+)?office"
    r"|this\s+is\s+an?\s+auto(?:matic|mated)(?:ally\s+generated)?\s+(?:reply|response|message|notification))",
    re.I | re.M,
)
_MONTHS = r"(?:январ|феврал|март|апрел|ма[яй]|июн|июл|август|сентябр|октябр|ноябр|декабр)\w*"
# The second sign of a notice: when the writer is back, whom to turn to meanwhile, or "automatic".
_NOTICE = re.compile(
    r"(?<!\w)(?:(?:до|по|после|с)\s+(?:\d{1,2}[./]\d{1,2}|\d{1,2}\s+" + _MONTHS + r"|понедельника|вторника|"
    r"среды|четверга|пятницы|следующей\s+недели)"
    r"|вернусь|выйду\s+на\s+работу|буду\s+(?:на\s+связи|в\s+офисе|доступ)|по\s+(?:срочным|всем|рабочим)\s+вопросам"
    r"|в\s+мо[её]\s+отсутствие|обращайтесь|с\s+ограниченным\s+доступом|автоматическ"
    r"|until|till|through|back\s+(?:on|in)|return(?:ing)?\s+on|urgent|limited\s+access|in\s+my\s+absence"
    r"|will\s+(?:reply|respond|get\s+back|answer)|auto(?:matic|mated))",
    re.I,
)
# A person writing: a question, a failure, a request for help, a confirmation ("я в отпуске
# до 23.03, но коллеги пишут, что не запускается сервер, посмотрите"; "…, файлы получил").
_PERSON = re.compile(
    r"\?|не\s+(?:работа|запуска|открыва|грузит|загружа|отвеча|приход|формиру|видн|показыва)"
    r"|ошибк|сбо[йея]|завис|вылета|глюч|помогите|подскажите|посмотрите|проверьте|пришлите|вышлите"
    r"|получил[аи]?(?!\w)|помогло|заработал|скачал"
    r"|error|crash|not\s+working|does\s*n[o']?t\s+work|please\s+(?:help|check|send)",
    re.I,
)
_NOTICE_MAX = 1500  # characters: a vacation notice is short
_NOTICE_HEAD = 600  # … and says so at once

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
    new_text: str = ""  # the text without quoted history and signature


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
    notice = vacation_notice(facts.new_text or facts.text)
    if notice:
        return f"vacation notice in the text ({notice!r})"
    return None


def vacation_notice(text: str) -> str | None:
    """The words that make ``text`` a vacation or out-of-office notice, or None.

    Two signs, near the start of a short text: an absence now, in the first person
    ("я в отпуске", "нахожусь вне офиса", "I am out of the office", "это автоматический
    ответ"), and a notice's second sign (a return "до 23.03", "буду на связи после",
    "until"; a deputy "по срочным вопросам обращайтесь"; "автоматически"). A text that asks
    something or reports a failure is a person's, whatever else it says; so is the past
    ("я был в отпуске, а после возвращения система не запускается": no present absence).
    """
    text = text.strip()
    if not text or len(text) > _NOTICE_MAX or _PERSON.search(text):
        return None
    absent = _ABSENT.search(text[:_NOTICE_HEAD])
    if absent is None or not _NOTICE.search(text):
        return None
    return " ".join(absent.group(0).split())[:60]


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
