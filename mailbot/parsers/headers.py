"""Header values: RFC 2047 encoded words, raw 8-bit bytes, Message-ID lists, dates."""
from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from mailparser.dates import parse_mail_date

from .charsets import decode_bytes, guess_decode
from .visible import visible

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_SURROGATE = re.compile(r"[\udc80-\udcff]")
_FOLD = re.compile(r"(?:\r\n|[\r\n])(?=[ \t])")  # RFC 5322 unfolding: the line break before WSP goes
_LINE_BREAK = re.compile(r"\r\n|[\r\n]")
_MSGID = re.compile(r"<([^<>\s]+)>")
MAX_MESSAGE_ID = 500  # octets: no mailer makes longer ones; longer are dropped (docs/operations.md)


def clean_text(value: str) -> str:
    """One line: unfolded (RFC 5322: a line break before whitespace goes), any other CR/LF (in
    an encoded word, or a bare one) a space, as other controls are; bidi controls go
    (:func:`~mailbot.parsers.visible.visible`). Words on both sides of a break stay apart."""
    return visible(_LINE_BREAK.sub(" ", _FOLD.sub("", value)))


def recover_8bit(value: str, hints: Sequence[str | None] = ()) -> str:
    """Decode raw 8-bit bytes that the email package kept as surrogate escapes."""
    if not _SURROGATE.search(value):
        return value
    raw = value.encode("utf-8", "surrogateescape")
    return guess_decode(raw, hints)[0]


def _word_bytes(encoding: str, payload: str) -> bytes:
    """The bytes of one encoded word's payload, decoded leniently."""
    data = payload.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    return binascii.a2b_qp(data, header=True)


def decode_words(value: str, hints: Sequence[str | None] = ()) -> str:
    """Decode RFC 2047 encoded words; adjacent words of one charset are joined as bytes."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []
    pending_label = ""
    pos = 0

    def flush() -> None:
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_label, hints)[0])
            pending.clear()

    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos:match.start()]
        label = match.group(1).split("*", 1)[0]
        if gap.strip() or label.lower() != pending_label.lower():
            flush()
            if gap.strip() or not out:
                out.append(gap)
        pending_label = label
        try:
            pending.append(_word_bytes(match.group(2), match.group(3)))
        except (binascii.Error, ValueError):
            flush()
            out.append(match.group(0))
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def unfolded(value: object, hints: Sequence[str | None] = ()) -> str:
    """A raw header value unfolded, with raw 8-bit bytes decoded but encoded words kept."""
    return recover_8bit(clean_text(str(value)), hints)


def decode_header_value(value: object, hints: Sequence[str | None] = ()) -> str:
    """A header value as clean NFC text: unfolded, raw 8-bit recovered, encoded words decoded."""
    return unicodedata.normalize("NFC", clean_text(decode_words(unfolded(value, hints), hints))).strip()


def message_ids(value: str | None) -> tuple[str, ...]:
    """Message-IDs in a header value, without angle brackets, in order, without repeats.

    Ids over :data:`MAX_MESSAGE_ID` octets are left out: nothing real is that
    long, they could not be indexed or sent back in our threading headers.
    """
    if not value:
        return ()
    found = _MSGID.findall(value)
    if not found:
        found = [token for token in value.split() if "@" in token]
    return tuple(dict.fromkeys(mid for mid in (m.strip("<>") for m in found) if mid and _fits(mid)))


def first_message_id(value: str | None) -> str | None:
    """The first Message-ID of a header value, or a bare token when there are no brackets."""
    ids = message_ids(value)
    if ids:
        return ids[0]
    tokens = (value or "").strip().strip("<>").split()
    return tokens[0] if tokens and _fits(tokens[0]) else None


def _fits(message_id: str) -> bool:
    return len(message_id.encode("utf-8", "surrogateescape")) <= MAX_MESSAGE_ID


def parse_date(value: str | None) -> datetime | None:
    """A timezone-aware datetime from a Date header, or None.

    mail-parser's RFC 5322 reading first (obsolete syntax, comments, zone names);
    the email package's more lenient one for what it refuses.
    """
    if not value:
        return None
    parsed = parse_mail_date(value).value
    if parsed is None:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
