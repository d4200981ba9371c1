"""winmail.dat (application/ms-tnef): expand into the files it carries, using tnefparse, and
the message's text (plain, HTML, or compressed RTF: compressed_rtf and striprtf read it).

tnefparse trusts the counts inside the stream: a damaged count makes it loop billions of
times.  :func:`_check_stream` walks the same structure first and refuses implausible
counts, so a hostile or truncated winmail.dat is kept as it is instead of hanging a worker.
"""
from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass

from compressed_rtf import decompress
from striprtf.striprtf import rtf_to_text
from tnefparse import TNEF
from tnefparse.mapi import IMESSAGE_SIG

logging.getLogger("tnefparse").setLevel(logging.CRITICAL)  # its warnings describe our input; we report defects

_SIGNATURE = 0x223E9F78
_MAPI_OBJECTS = {(1, 0x9003), (2, 0x9005)}  # attMAPIProps, attAttachment
_RECIPIENT_TABLE = 0x9004
_ATTACH_DATA_OBJ = 0x3701
_FIXED_SIZES = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0007: 8, 0x0006: 8,
                0x0014: 8, 0x0040: 8, 0x0048: 16}
_VARIABLE_TYPES = {0x0000, 0x000D, 0x001E, 0x001F, 0x0102}
_MAX_NESTING = 3
_MAX_RTF = 4 * 1024 * 1024  # bytes of compressed RTF read (a body, not a file: text is small)
_RTF_CODEPAGE = re.compile(rb"\\ansicpg(\d{3,5})")
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from


def _bounded(count: int, item_size: int, data: bytes, offset: int) -> int:
    if count * item_size > len(data) - offset + item_size:
        raise ValueError("implausible count in TNEF stream")
    return count


def _check_values(data: bytes, offset: int, name: int, kind: int, count: int | None, depth: int) -> int:
    """Skip the values of one MAPI property; return the offset after them."""
    if kind in _FIXED_SIZES:
        n = count or 1
        offset += _bounded(n, _FIXED_SIZES[kind], data, offset) * _FIXED_SIZES[kind]
        return offset + (2 if n % 2 and kind in (0x0002, 0x000B) else 0)
    if kind not in _VARIABLE_TYPES:
        return len(data)  # tnefparse stops at an unknown type
    groups = _bounded(count, 4, data, offset) if count else 1
    for _ in range(groups):
        values = 1
        if not count:
            values = _bounded(_u32(data, offset)[0], 4, data, offset + 4)
            offset += 4
        for _ in range(values):
            length = _u32(data, offset)[0]
            value = data[offset + 4:offset + 4 + min(length, 16)]
            if name == _ATTACH_DATA_OBJ and value.startswith(IMESSAGE_SIG):
                _check_stream(data[offset + 4 + len(IMESSAGE_SIG):offset + 4 + length], depth + 1)
            offset += 4 + length + (-length % 4)
    return offset


def _check_mapi(data: bytes, offset: int, depth: int) -> int:
    """Walk one MAPI property block like tnefparse.mapi.decode_mapi; return its end."""
    count = _bounded(_u32(data, offset)[0], 4, data, offset + 4)
    offset += 4
    for _ in range(count):
        if offset >= len(data):
            break
        kind, name = _u16(data, offset)[0], _u16(data, offset + 2)[0]
        offset += 4
        if name >= 0x8000:
            offset += 16
            offset += 8 if _u32(data, offset)[0] == 0 else 8 + _u32(data, offset + 4)[0] + (-_u32(data, offset + 4)[0] % 4)
        values = None
        if kind & 0x1000:
            kind ^= 0x1000
            values = _u32(data, offset)[0]
            offset += 4
        offset = _check_values(data, offset, name, kind, values, depth)
    return offset


def _check_stream(data: bytes, depth: int = 0) -> None:
    """Raise ValueError (or struct.error) when tnefparse could loop on this stream."""
    if depth > _MAX_NESTING or _u32(data, 0)[0] != _SIGNATURE:
        raise ValueError("not a TNEF stream")
    offset = 6
    while offset + 12 < len(data):
        level, name = data[offset], _u16(data, offset + 1)[0]
        length = _u32(data, offset + 5)[0]
        body = data[offset + 9:offset + 9 + length]
        if (level, name) in _MAPI_OBJECTS:
            _check_mapi(body, 0, depth)
        elif name == _RECIPIENT_TABLE:
            position = 4
            for _ in range(_bounded(_u32(body, 0)[0], 4, body, 4)):
                position = _check_mapi(body, position, depth)
        offset += length + 11


def _name(attachment: object) -> str | None:
    try:
        name = attachment.long_filename()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - tnefparse decodes 8.3 names as UTF-8 and may fail
        return None
    return name if isinstance(name, str) and name.strip("\x00 ") else None


@dataclass(frozen=True)
class TnefContent:
    """What a winmail.dat carries: its files (name, bytes) and the message's text, if any,
    as ("plain" | "html", text)."""
    files: list[tuple[str | None, bytes]]
    body: tuple[str, str] | None


def expand_tnef(data: bytes) -> TnefContent | None:
    """The files and text of a TNEF stream; None when it is unreadable."""
    try:
        _check_stream(data)
        parsed = TNEF(data, do_checksum=False)
        files = [(_name(att), bytes(att.data)) for att in parsed.attachments if att.data]
    except Exception:  # noqa: BLE001 - any damage in the stream means "keep winmail.dat as is"
        return None
    return TnefContent(files, _body(parsed))


def _body(parsed: TNEF) -> tuple[str, str] | None:
    """The message's text: the plain body, else the HTML one, else the RTF one as text."""
    for kind, value in (("plain", parsed.body), ("html", parsed.htmlbody)):
        text = value.decode("cp1252", "replace") if isinstance(value, bytes) else value
        if isinstance(text, str) and text.strip("\x00 \r\n"):
            return kind, text.replace("\x00", "")
    try:
        rtf = parsed._rtfbody  # noqa: SLF001 - the compressed bytes: .rtfbody would log without the package
        if not rtf or len(rtf) > _MAX_RTF:
            return None
        rtf = decompress(rtf + b"\x00")[:4 * _MAX_RTF]
        codepage = _RTF_CODEPAGE.search(rtf[:2048])
        encoding = f"cp{int(codepage.group(1))}" if codepage else "cp1252"
        text = rtf_to_text(rtf.decode("latin-1"), encoding=encoding, errors="replace")
    except Exception:  # noqa: BLE001 - a damaged or unknown RTF body: the files still count
        return None
    return ("plain", text) if text.strip() else None
