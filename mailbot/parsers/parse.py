"""parse_mail: raw bytes in, one immutable ParsedMail out; never raises except MailTooLarge."""
from __future__ import annotations

import re
from email.message import Message

from .addresses import address_list, first_mailbox
from .attachments import AttachmentSink
from .body import html_to_text
from .headers import aware, clean_text, decode_header_value, first_message_id, message_ids, parse_date, unfolded
from .kind import KindInput, classify
from .mime import (
    MimeContent,
    MimeWalker,
    cap_header_fields,
    declared_charsets,
    param,
    parse_message,
    repair_header_block,
)
from .model import MailKind, MailTooLarge, ParsedMail, ParseOptions
from .numbers import find_incident_numbers, find_request_numbers, numbers_in
from .reply import new_text
from .reports import dsn_report, mdn_report

_SUBJECT_SPACE = re.compile(r"[ \t]+")


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
        return _parse(raw, options)
    except MailTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - the promise is "never raise"; the defect says what broke
        return _unparsed(raw, exc)


def _parse(raw: bytes, options: ParseOptions) -> ParsedMail:
    capped, cut = cap_header_fields(raw)
    fixed, repaired = repair_header_block(capped)
    message, date, defects = parse_message(fixed)
    defects.extend(cut)
    if repaired:
        defects.append(f"header block repaired: {repaired} stray line(s) joined or dropped")
    hints = declared_charsets(message)
    sink = AttachmentSink(options)
    content = MimeWalker(sink, hints).walk(message)
    raw_headers = [(clean_text(str(name)).strip(), value) for name, value in message.raw_items()]
    headers = tuple((name, decode_header_value(value, hints)) for name, value in raw_headers)
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)

    def raw_all(name: str) -> list[str]:
        return [unfolded(v, hints) for n, v in raw_headers if n.lower() == name]

    reply_to = address_list(raw_all("reply-to"), hints)
    from_name, from_addr = first_mailbox(raw_all("from") or raw_all("sender"), hints)
    if "@" not in from_addr and reply_to:
        from_addr = reply_to[0]  # From: "name" <> and similar: answer where replies would go
    to, cc = address_list(raw_all("to"), hints), address_list(raw_all("cc"), hints)
    subject = _SUBJECT_SPACE.sub(" ", first.get("subject", "")).strip()
    text, html = _bodies(content)
    return_path = _return_path(first.get("return-path"))
    kind, reason = classify(KindInput(
        header=lambda name: first.get(name.lower()), report_type=_report_type(message),
        has_delivery_status=bool(content.delivery_status), has_disposition=bool(content.disposition),
        from_addr=from_addr, from_name=from_name, return_path=return_path, subject=subject, text=text,
    ))
    exclude = {from_addr, *to, *cc, *(a.lower() for a in options.own_addresses)}
    return ParsedMail(
        message_id=first_message_id(first.get("message-id")),
        in_reply_to=message_ids(first.get("in-reply-to")),
        references=message_ids(" ".join(v for n, v in headers if n.lower() == "references")),
        subject=subject,
        from_addr=from_addr,
        from_name=from_name,
        reply_to=reply_to[0] if reply_to else None,
        to=to,
        cc=cc,
        date=aware(date) or parse_date(first.get("date")),
        return_path=return_path,
        text=text,
        html=html,
        new_text=new_text(text),
        attachments=tuple(sink.items),
        kind=kind,
        kind_reason=reason,
        request_numbers=numbers_in((subject, text), options.request_prefix, find_request_numbers),
        incident_numbers=numbers_in((subject, text), options.incident_prefix, find_incident_numbers),
        dsn=dsn_report(content.delivery_status, content.original_ids, text,
                       address_list(raw_all("x-failed-recipients"), hints), exclude)
        if kind is MailKind.DSN else None,
        mdn=mdn_report(content.disposition, content.original_ids) if kind is MailKind.MDN else None,
        headers=headers,
        defects=tuple(dict.fromkeys([*defects, *content.defects])),
        size=len(raw),
    )


def _bodies(content: MimeContent) -> tuple[str, str | None]:
    """(text, html): plain parts as sent, HTML-only parts rendered; HTML kept as sent."""
    pieces = [(t if k == "plain" else html_to_text(t)).strip("\n") for k, t in content.chunks if k in ("plain", "html")]
    html = [t for k, t in content.chunks if k in ("html", "html-alt")]
    return "\n".join(p for p in pieces if p.strip()), ("\n".join(html) if html else None)


def _report_type(message: Message) -> str | None:
    if message.get_content_type() != "multipart/report":
        return None
    value = param(message, "report-type")
    return value.strip().lower() if value else None


def _return_path(value: str | None) -> str | None:
    """'' for the null sender <>, the lower-cased address otherwise, None when absent."""
    if value is None:
        return None
    inner = re.search(r"<([^<>]*)>", value)
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
