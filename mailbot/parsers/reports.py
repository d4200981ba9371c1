"""Delivery status (RFC 3464) and disposition (RFC 8098) reports, structured or as text.

Structured report parts are read field by field.  Text-only bounces (qmail, Exim,
Exchange, Gmail, ...) are read best-effort: the report section ends where the returned
message starts; recipients come from X-Failed-Recipients or from addresses listed at
line starts; each recipient's status is the first enhanced status code (or SMTP reply
code, as X.0.0) after it.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from .headers import first_message_id
from .model import DsnRecipient, DsnReport, MdnReport

_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)")
_STATUS = re.compile(r"(?<![\w.])([245]\.[0-9]{1,3}\.[0-9]{1,3})(?![\w]|\.[0-9])")
_FAILURE_STATUS = re.compile(r"(?<![\w.])([45]\.[0-9]{1,3}\.[0-9]{1,3})(?![\w]|\.[0-9])")
_SMTP_CODE = re.compile(r"(?<![\w.-])([45][0-9]{2})(?=[\s-])")
_SMTP_REPLY = re.compile(r"(?<![\w.-])[45][0-9]{2}[ -]([45]\.[0-9]{1,3}\.[0-9]{1,3})(?![\w]|\.[0-9])")
_RETURNED = re.compile(
    r"^(?:\s*-{2,}.*(?:copy of|original message|undelivered message|returned message|message follows|"
    r"headers? of|сообщени).*|\s*original message headers:.*|(?:return-path|received|dkim-signature):.*)$",
    re.I | re.M,
)
_ORIGINAL_ID = re.compile(r"^message-id:[ \t]*(.+)$", re.I | re.M)
_LISTED = re.compile(r"^[ \t]*<?([^\s<>()@,;:\"']+@[^\s<>()@,;:\"']+?)>?(?=[\s:,;<]|$)", re.M)
_ANY_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DAEMON = re.compile(r"(?:mailer-daemon|mail-daemon|mailerdaemon|postmaster)@", re.I)


def field_blocks(text: str) -> list[dict[str, str]]:
    """Blank-line separated blocks of "Name: value" fields (continuations joined, names lower-cased)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.replace("\r", "").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
        elif line[0] in " \t" and last:
            current[last] = f"{current[last]} {line.strip()}"
        else:
            found = _FIELD.fullmatch(line)
            last = found.group(1).lower() if found else None
            if found:
                current.setdefault(last, found.group(2).strip())
    if current:
        blocks.append(current)
    return blocks


def _typed_address(value: str) -> str:
    """The address of an 'rfc822; user@host' field, lower-cased."""
    return value.split(";", 1)[-1].strip().strip("<>").strip().lower()


def _after_type(value: str | None) -> str | None:
    return value.split(";", 1)[-1].strip() if value and value.strip() else None


def _status_in(text: str | None, pattern: re.Pattern[str] = _STATUS) -> str | None:
    found = pattern.search(text or "")
    return found.group(1) if found else None


def recipients_from_fields(groups: Sequence[Sequence[dict[str, str]]]) -> list[DsnRecipient]:
    """One DsnRecipient per per-recipient block of the delivery-status parts."""
    result = []
    for blocks in groups:
        for block in blocks:
            field = block.get("final-recipient") or block.get("original-recipient") or block.get("x-actual-recipient")
            if not field:
                continue
            diagnostic = _after_type(block.get("diagnostic-code"))
            action = (block.get("action") or "").split()
            result.append(DsnRecipient(
                address=_typed_address(field),
                status=_status_in(block.get("status")) or _status_in(diagnostic),
                action=action[0].lower() if action else None,
                diagnostic=diagnostic,
            ))
    return result


def _report_section(text: str) -> tuple[str, str]:
    """(bounce explanation, returned message) of a text bounce."""
    cut = _RETURNED.search(text)
    return (text[:cut.start()], text[cut.start():]) if cut else (text, "")


def _listed_addresses(report: str, exclude: Collection[str]) -> list[str]:
    def usable(addr: str) -> bool:
        return addr not in exclude and not _DAEMON.match(addr)

    listed = [a.lower().rstrip(".") for a in _LISTED.findall(report)]
    found = [a for a in dict.fromkeys(listed) if usable(a)]
    if found:
        return found
    return [a for a in dict.fromkeys(x.lower().rstrip(".") for x in _ANY_ADDRESS.findall(report)) if usable(a)]


def _text_recipient(address: str, segment: str) -> DsnRecipient:
    """Status near one address: "550 5.1.1" first, then any 4.x.x/5.x.x, then "550" as 5.0.0."""
    found = _SMTP_REPLY.search(segment) or _FAILURE_STATUS.search(segment)
    status = found.group(1) if found else None
    if found is None:
        found = _SMTP_CODE.search(segment)
        status = f"{found.group(1)[0]}.0.0" if found else None
    line = None
    if found:
        start = segment.rfind("\n", 0, found.start()) + 1
        end = segment.find("\n", found.end())
        line = segment[start:end if end >= 0 else len(segment)].strip()
    action = {"5": "failed", "4": "delayed"}.get((status or " ")[0])
    return DsnRecipient(address=address, status=status, action=action, diagnostic=line)


def recipients_from_text(text: str, failed: Sequence[str], exclude: Collection[str]) -> list[DsnRecipient]:
    """Failed recipients of a text-only bounce, with the status found near each address."""
    report, _ = _report_section(text)
    embedded = recipients_from_fields([field_blocks(report)])
    if embedded:
        return embedded
    addresses = list(failed) or _listed_addresses(report, exclude)
    lowered = report.lower()
    starts = [lowered.find(a) for a in addresses]
    result = []
    for index, address in enumerate(addresses):
        start = starts[index]
        later = [s for s in starts if s > start]
        segment = report[start:min(later)] if start >= 0 and later else report[max(start, 0):]
        result.append(_text_recipient(address, segment))
    return result


def original_id_from_text(text: str) -> str | None:
    """Message-ID of the returned message quoted in a text bounce."""
    _, returned = _report_section(text)
    found = _ORIGINAL_ID.search(returned)
    return first_message_id(found.group(1)) if found else None


def dsn_report(groups: Sequence[Sequence[dict[str, str]]], original_ids: Sequence[str], text: str,
               failed: Sequence[str], exclude: Collection[str]) -> DsnReport:
    """The bounce report from delivery-status parts, or from the bounce text."""
    recipients = recipients_from_fields(groups) or recipients_from_text(text, failed, exclude)
    original = original_ids[0] if original_ids else original_id_from_text(text)
    return DsnReport(original_message_id=original, recipients=tuple(recipients))


def mdn_report(blocks: Sequence[dict[str, str]], original_ids: Sequence[str]) -> MdnReport:
    """The read receipt from a message/disposition-notification part."""
    fields: dict[str, str] = {}
    for block in blocks:
        for name, value in block.items():
            fields.setdefault(name, value)
    disposition = fields.get("disposition", "")
    kind = disposition.split(";", 1)[-1].strip().split("/", 1)[0].strip().lower()
    original = first_message_id(fields.get("original-message-id")) or (original_ids[0] if original_ids else None)
    final = fields.get("final-recipient") or fields.get("original-recipient")
    return MdnReport(original_message_id=original, disposition=kind or "unknown",
                     final_recipient=_typed_address(final) if final else None)
