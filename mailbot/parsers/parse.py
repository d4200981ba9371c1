"""parse_mail: raw bytes in, one immutable ParsedMail out; never raises except MailTooLarge."""
from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message

from .addresses import address_list, first_mailbox, written_addresses
from .attachments import AttachmentSink
from .body import html_to_text
from .headers import clean_text, decode_header_value, first_message_id, message_ids, parse_date, unfolded
from .kind import KindInput, classify
from .mime import (
    UNREADABLE,
    MimeContent,
    MimeWalker,
    cap_header_fields,
    declared_charsets,
    nesting_depth,
    param,
    parse_message,
    repair_header_block,
)
from .model import DsnReport, MailKind, MailTooLarge, ParsedMail, ParseOptions
from .numbers import find_incident_numbers, find_request_numbers, numbers_in
from .reply import is_forward_subject, reply_parts
from .reports import dsn_report, mdn_report

_SUBJECT_SPACE = re.compile(r"[ \t]+")
# A message nested this deep (or one whose structure the email package could not read) is
# parsed again in a thread of its own: the email package recurses once or more per level,
# and the stack a fresh thread starts with is the same whoever calls (a worker process, the
# daemon, a deep call chain), so the result is too. Shallower trees stay far from the limit.
_DEEP_LEVELS = 16
_ANGLE = re.compile(r"<([^<>]*)>")


def parse_mail(raw: bytes, options: ParseOptions = ParseOptions()) -> ParsedMail:
    """Parse one raw message.

    Raises MailTooLarge when the message, one attachment, or the number of attachments
    exceeds `options`; any other problem with the input degrades to best-effort fields
    plus entries in `defects`.
    """
    raw = bytes(raw)
    if len(raw) > options.max_message_bytes:
        raise MailTooLarge(f"message has {len(raw)} bytes, limit {options.max_message_bytes}")
    try:
        message, defects = _message(raw)
        if (nesting_depth(message, _DEEP_LEVELS) >= _DEEP_LEVELS
                or any(defect.startswith(UNREADABLE) for defect in defects)):
            return _in_fresh_thread(_parse, raw, options)
        return _build(raw, message, defects, options)
    except MailTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - the promise is "never raise"; the defect says what broke
        return _unparsed(raw, exc)


def _in_fresh_thread(parse: Callable[[bytes, ParseOptions], ParsedMail], raw: bytes,
                     options: ParseOptions) -> ParsedMail:
    """``parse(raw, options)`` at the bottom of a new thread's stack (its exception raised here)."""
    outcome: list[ParsedMail | BaseException] = []

    def run() -> None:
        try:
            outcome.append(parse(raw, options))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append(exc)

    thread = threading.Thread(target=run, name="parse-nested", daemon=True)
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@dataclass(frozen=True)
class _Headers:
    """The message's headers, raw (8-bit recovered, for address parsing) and decoded."""

    raw: tuple[tuple[str, str], ...]
    decoded: tuple[tuple[str, str], ...]
    hints: Sequence[str]

    @classmethod
    def of(cls, message: Message, hints: Sequence[str]) -> _Headers:
        raw = tuple((clean_text(str(name)).strip(), str(value)) for name, value in message.raw_items())
        return cls(raw, tuple((name, decode_header_value(value, hints)) for name, value in raw), hints)

    def get(self, name: str) -> str | None:
        """The first decoded value of a header, or None."""
        lname = name.lower()
        return next((value for key, value in self.decoded if key.lower() == lname), None)

    def unfolded(self, name: str) -> list[str]:
        """All values of a header, unfolded, raw 8-bit decoded, encoded words kept."""
        return [unfolded(value, self.hints) for key, value in self.raw if key.lower() == name]

    def addresses(self, name: str) -> tuple[str, ...]:
        return address_list(self.unfolded(name), self.hints)


def _message(raw: bytes) -> tuple[Message, list[str]]:
    """The parsed tree of a raw message after header-block repairs, with what was repaired."""
    capped, cut = cap_header_fields(raw)
    fixed, repaired = repair_header_block(capped)
    message, defects = parse_message(fixed)
    if repaired:
        defects.append(f"header block repaired: {repaired} stray line(s) joined or dropped")
    return message, [*cut, *defects]


def _parse(raw: bytes, options: ParseOptions) -> ParsedMail:
    return _build(raw, *_message(raw), options)


def _build(raw: bytes, message: Message, defects: list[str], options: ParseOptions) -> ParsedMail:
    hints = declared_charsets(message)
    sink = AttachmentSink(options)
    content = MimeWalker(sink, hints, raw).walk(message)
    headers = _Headers.of(message, hints)
    reply_to = headers.addresses("reply-to")
    from_name, from_addr = first_mailbox(headers.unfolded("from") or headers.unfolded("sender"), hints)
    if "@" not in from_addr and reply_to:
        from_addr = reply_to[0]  # From: "name" <> and similar: answer where replies would go
    to, cc = headers.addresses("to"), headers.addresses("cc")
    subject = _SUBJECT_SPACE.sub(" ", headers.get("subject") or "").strip()
    text, html = _bodies(content)
    return_path = _return_path(headers.get("return-path"))
    fresh, forward_below = reply_parts(text)
    kind, reason = classify(KindInput(
        header=headers.get, report_type=_report_type(message),
        has_delivery_status=bool(content.delivery_status), has_disposition=bool(content.disposition),
        from_addr=from_addr, from_name=from_name, return_path=return_path, subject=subject, text=text,
        new_text=fresh,
    ))
    return ParsedMail(
        message_id=first_message_id(headers.get("message-id")),
        in_reply_to=message_ids(headers.get("in-reply-to")),
        references=message_ids(" ".join(v for k, v in headers.decoded if k.lower() == "references")),
        subject=subject, from_addr=from_addr, from_name=from_name,
        reply_to=reply_to[0] if reply_to else None, to=to, cc=cc,
        date=parse_date(headers.get("date")), return_path=return_path,
        text=text, html=html, new_text=fresh, attachments=tuple(sink.items),
        kind=kind, kind_reason=reason,
        # numbers name a request only in the subject: never in the text, which quotes anything
        request_numbers=numbers_in((subject,), options.request_prefix, find_request_numbers),
        incident_numbers=numbers_in((subject,), options.incident_prefix, find_incident_numbers),
        dsn=_dsn(kind, content, text, headers, {from_addr, *to, *cc, *map(str.lower, options.own_addresses)}),
        mdn=mdn_report(content.disposition, content.original_ids) if kind is MailKind.MDN else None,
        headers=headers.decoded,
        defects=tuple(dict.fromkeys([*defects, *content.defects])),
        size=len(raw),
        from_header=tuple(addr.lower() for value in headers.unfolded("from")
                          for addr in written_addresses(value)),
        forwarded=forward_below or is_forward_subject(subject),
    )


def _dsn(kind: MailKind, content: MimeContent, text: str, headers: _Headers, exclude: set[str]) -> DsnReport | None:
    """The bounce report of a DSN (recipients named in our own headers are not failed ones)."""
    if kind is not MailKind.DSN:
        return None
    failed = headers.addresses("x-failed-recipients")
    return dsn_report(content.delivery_status, content.original_ids, text, failed, exclude)


def _bodies(content: MimeContent) -> tuple[str, str | None]:
    """(text, html): plain parts (NFC) or rendered HTML-only parts; the HTML kept as sent."""
    pieces = [t if k == "plain" else html_to_text(t) for k, t in content.chunks if k in ("plain", "html")]
    html = [t for k, t in content.chunks if k in ("html", "html-alt")]
    text = unicodedata.normalize("NFC", "\n".join(p.strip("\n") for p in pieces if p.strip()))
    return text, ("\n".join(html) if html else None)


def _report_type(message: Message) -> str | None:
    if message.get_content_type() != "multipart/report":
        return None
    value = param(message, "report-type")
    return value.strip().lower() if value else None


def _return_path(value: str | None) -> str | None:
    """'' for the null sender <>, the lower-cased address otherwise, None when absent."""
    if value is None:
        return None
    inner = _ANGLE.search(value)
    return (inner.group(1) if inner else value).strip().lower()


def _unparsed(raw: bytes, exc: Exception) -> ParsedMail:
    """The last-resort result when parsing failed in an unforeseen way."""
    return ParsedMail(
        message_id=None, in_reply_to=(), references=(), subject="", from_addr="", from_name="",
        reply_to=None, to=(), cc=(), date=None, return_path=None, text="", html=None, new_text="",
        attachments=(), kind=MailKind.HUMAN, kind_reason="unparsed",
        request_numbers=(), incident_numbers=(),
        defects=(f"parser error: {type(exc).__name__}: {exc}"[:500],), size=len(raw),
    )
