"""Raw bytes to a MIME tree (email's feed parser), and the walk that sorts its parts.

The walk decides which parts are the body (text/plain preferred inside
multipart/alternative, HTML kept as sent), which are attachments (everything else,
nested messages as .eml, winmail.dat expanded), and collects report parts (DSN/MDN).
"""
from __future__ import annotations

import binascii
import email
import email.feedparser
import email.parser
import mimetypes
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message

from .attachments import AttachmentSink
from .body import normalize_newlines, unflow
from .charsets import codec_for, decode_bytes, sniff_html_charset
from .headers import decode_header_value, first_message_id, unfolded
from .reports import field_blocks
from .tnef import expand_tnef

MAX_DEPTH = 40  # parts nested deeper are not read (they stay in their nested message's file)
# Levels of a parsed tree that are kept: deeper ones are cut, so that serializing a nested
# message (the email generator recurses, 3-4 frames a level) never reaches the recursion
# limit, whose headroom depends on the caller's stack: the bytes of a file must be the same
# wherever the mail is parsed (mailbot.register.files reads files back by parsing the mail again).
KEPT_DEPTH = 2 * MAX_DEPTH
MAX_HEADER_FIELD = 64 * 1024
_FEED_CHUNK = 64 * 1024
_HEADER_ZONE = 256 * 1024
_HUGE_HEADER_ZONE = 8 * 1024 * 1024
_PY_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_STRICT_FIELD = re.compile(rb"[A-Za-z][A-Za-z0-9-]*:")
_STRAY_LOOKAHEAD = 50
_BODY_TYPES = ("text/plain", "text/html")
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")
_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")
_IDENTITY = ("", "7bit", "8bit", "binary")
_SPAN_PROBE = 64  # bytes at each end of an encoded body that find it in the raw mail
_BULK_BYTES = 16 * 1024  # runs of base64 lines this long are not fed line by line (_feed)
_TOKEN = re.compile(r"mailbotbulk([0-9a-f]{16})([0-9]{8})")  # a run set aside (_feed)
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


_BLANK_LINE = re.compile(rb"\n\r?\n")


def _header_end(raw: bytes, limit: int) -> int:
    """Offset of the blank line after the header block (or `limit`, whichever is first)."""
    match = _BLANK_LINE.search(raw, 0, limit)
    return match.start() if match else min(limit, len(raw))


def cap_header_fields(raw: bytes) -> tuple[bytes, list[str]]:
    """Cut header fields longer than MAX_HEADER_FIELD bytes, as Postfix's header_size_limit does.

    No real header is that long; the cap bounds the work spent on hostile ones (a 1 MB
    address list would otherwise cost seconds to split into mailboxes).
    """
    end = _header_end(raw, _HUGE_HEADER_ZONE)
    if end <= MAX_HEADER_FIELD:
        return raw, []
    fields = re.split(rb"\n(?![ \t])", raw[:end])
    long = [i for i, f in enumerate(fields) if len(f) > MAX_HEADER_FIELD]
    if not long:
        return raw, []
    defects = [f"header field {fields[i].split(b':', 1)[0][:40]!r} cut to {MAX_HEADER_FIELD} bytes" for i in long]
    for i in long:
        fields[i] = fields[i][:MAX_HEADER_FIELD].rstrip(b"\r")
    return b"\n".join(fields) + raw[end:], defects


def repair_header_block(raw: bytes) -> tuple[bytes, int]:
    """Join stray unindented lines inside the header block (broken folding); return (bytes, count).

    A stray line counts only when a real "Name:" header line follows it before the
    blank line; otherwise the header block has simply ended without a separator.
    """
    end = _header_end(raw, _HEADER_ZONE)
    lines = raw[:end].split(b"\n")
    if all(_PY_HEADER_LINE.match(line) for line in lines if line.strip(b"\r")):
        return raw, 0
    repaired, fixed, seen_header = [], 0, False
    for index, line in enumerate(lines):
        if _PY_HEADER_LINE.match(line) or not line.strip(b"\r"):
            seen_header = seen_header or not line[:1].isspace()
            repaired.append(line)
            continue
        ahead = lines[index + 1:index + 1 + _STRAY_LOOKAHEAD]
        if not any(_STRICT_FIELD.match(nxt) for nxt in ahead):
            repaired.extend(lines[index:])
            break
        fixed += 1
        if seen_header:
            repaired.append(b" " + line)
    if not fixed:
        return raw, 0
    return b"\n".join(repaired) + raw[end:], fixed


class _LineEndAtEnd:
    """``email.feedparser.NLCRE_eol`` (a line end at the end of a string), searched from the
    string's last two characters: the parser looks for it at the end of every part's payload,
    and the pattern's own search tries every position first (a third of the CPU of parsing
    mail with files). Same matches: a match can only start there."""

    pattern = email.feedparser.NLCRE_eol

    def search(self, string: str) -> re.Match | None:
        return self.pattern.search(string, max(0, len(string) - 2))


if isinstance(email.feedparser.NLCRE_eol, re.Pattern):
    email.feedparser.NLCRE_eol = _LineEndAtEnd()


def _feed(raw: bytes) -> Message:
    """email's feed parser, without going line by line through the files' encoded bodies.

    The parser reads every line of a message in Python (most of the time spent parsing mail
    with files: a 1 MB attachment is 13,500 lines). Long runs of lines that can only be body
    text, whatever part they are in (:func:`_bulk_runs`), are set aside: each is fed as one
    line of its own instead, a token, and put back in place of its token after the parse.
    The parser does the same with a run as with its token (neither a boundary nor a header
    line, no blank line), so the tree is the one the whole message gives; should a token not
    come back exactly once, the whole message is parsed as it is.
    """
    runs = _bulk_runs(raw)
    if not runs:
        return _feed_whole(raw)
    key = secrets.token_hex(8)  # an attacker's text cannot pass for a token
    pieces, last = [], 0
    for number, (start, end) in enumerate(runs):
        pieces += [raw[last:start], f"mailbotbulk{key}{number:08d}".encode("ascii")]
        last = end
    pieces.append(raw[last:])
    message = _feed_whole(b"".join(pieces))
    view = memoryview(raw)  # decoded from the mail itself: a 25 MB file is not copied twice
    texts = [str(view[start:end], "ascii") for start, end in runs]
    return message if _put_back(message, key, texts) else _feed_whole(raw)


def _feed_whole(raw: bytes) -> Message:
    """email's feed parser, fed in chunks: parsing the whole message as one str (what
    message_from_bytes and mailparser.parse_from_bytes do) costs ~7.7x the message size
    in peak memory for a big attachment; chunks keep it under 3x."""
    parser = email.feedparser.BytesFeedParser()
    view = memoryview(raw)
    for start in range(0, len(raw), _FEED_CHUNK):
        parser.feed(bytes(view[start:start + _FEED_CHUNK]))
    return parser.close()


def _bulk_runs(raw: bytes) -> list[tuple[int, int]]:
    """Where the encoded bodies worth setting aside are: from a blank line to the next line
    that starts with ``-`` (a boundary's), runs of base64 lines (:func:`_base64_run`)."""
    runs, searched = [], 0
    while (blank := _BLANK_LINE.search(raw, searched)) is not None:
        searched = _dash_line(raw, blank.end())
        run = _base64_run(raw, blank.end(), searched)
        if run is not None:
            runs.append(run)
    return runs


def _dash_line(raw: bytes, start: int) -> int:
    """Where the first line from ``start`` on that begins with ``-`` begins, less one (its line
    end; the length of ``raw`` when there is none). A search for the one byte skips an
    encoded body at once: it holds none."""
    while (dash := raw.find(b"-", start)) > 0 and raw[dash - 1] != ord("\n"):
        start = dash + 1
    return dash - 1 if dash > 0 else len(raw)


def _base64_run(raw: bytes, start: int, stop: int) -> tuple[int, int] | None:
    """``raw[start:stop]`` without its last line ends when it is at least _BULK_BYTES of lines
    of base64 characters, all as long as the first and ended alike, the last one no longer.

    Such a line is neither a boundary (``--``), nor a header line (no colon, no leading
    space), nor blank: the feed parser only adds it to whatever it is reading.
    """
    while stop > start and raw[stop - 1] in b"\r\n":
        stop -= 1
    first_end = raw.find(b"\n", start, stop)
    if stop - start < _BULK_BYTES or first_end <= start + 1:
        return None
    eol = b"\r\n" if raw[first_end - 1] == ord("\r") else b"\n"
    length = first_end + 1 - len(eol) - start  # of a line, without its end
    body = raw[start:stop]
    width = length + len(eol)
    lines = (len(body) - 1) // width  # those with an end (the last one has none)
    regular = all(body[length + i::width] == eol[i:i + 1] * lines for i in range(len(eol)))
    return (start, stop) if regular and body.translate(None, _BASE64) == eol * lines else None


def _put_back(message: Message, key: str, texts: list[str]) -> bool:
    """Each token of this ``key`` in the parsed tree (bodies, preambles, epilogues) replaced by
    its text; whether every token was found exactly once."""
    found = [0] * len(texts)

    def text(match: re.Match) -> str:
        number = int(match.group(2))
        if match.group(1) != key or number >= len(texts):
            return match.group(0)
        found[number] += 1
        return texts[number]

    def put_back(value: str) -> str:
        whole = _TOKEN.fullmatch(value)  # a body that is one run: its text, not a copy of it
        return text(whole) if whole else _TOKEN.sub(text, value)

    stack = [message]
    while stack:
        part = stack.pop()
        payload = stored_payload(part)
        if isinstance(payload, list):
            stack.extend(child for child in payload if isinstance(child, Message))
        elif isinstance(payload, str):
            part._payload = put_back(payload)  # noqa: SLF001 - as the parser set it
        for name in ("preamble", "epilogue"):
            value = getattr(part, name, None)
            if isinstance(value, str):
                setattr(part, name, put_back(value))
    return all(count == 1 for count in found)


UNREADABLE = "MIME structure unreadable"


def parse_message(raw: bytes) -> tuple[Message, list[str]]:
    """Parse once into an email.message tree (cut at KEPT_DEPTH); fall back to the header block alone."""
    try:
        message = _feed(raw)
        return message, (["parts nested deeper than %d levels cut" % KEPT_DEPTH] if _cut(message) else [])
    except Exception as exc:  # noqa: BLE001 - RecursionError on absurd nesting, and the like
        defects = [f"{UNREADABLE} ({type(exc).__name__}); parsed headers only"]
    try:
        return email.parser.BytesParser().parsebytes(raw, headersonly=True), defects
    except Exception as exc:  # noqa: BLE001
        return Message(), [*defects, f"unparseable message ({type(exc).__name__})"]


def _cut(message: Message) -> bool:
    """Empty the parts at KEPT_DEPTH that hold further parts; whether there were any."""
    cut = False
    stack = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        payload = stored_payload(part)
        if not isinstance(payload, list):
            continue
        if depth >= KEPT_DEPTH:
            part.set_payload("")
            cut = True
        else:
            stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))
    return cut


def nesting_depth(message: Message, limit: int) -> int:
    """How many levels of parts the tree has below its top (counted up to ``limit``)."""
    deepest, stack = 0, [(message, 0)]
    while stack and deepest < limit:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        payload = stored_payload(part)
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))
    return deepest


def iter_parts(part: Message, depth: int = 0) -> Iterator[Message]:
    """All parts of a tree (nested messages included), depth-first, stopping at MAX_DEPTH."""
    yield part
    payload = stored_payload(part)
    if depth < MAX_DEPTH and isinstance(payload, list) and part.get_content_type() != "message/delivery-status":
        for child in payload:
            if isinstance(child, Message):
                yield from iter_parts(child, depth + 1)


def param(part: Message, name: str, header: str = "content-type", hints: Sequence[str] = ()) -> str | None:
    """A header parameter as text (RFC 2231 charset applied, raw 8-bit decoded), or None."""
    source = part
    raw = raw_header(part, header)
    if raw is not None and not raw.isascii():
        source = Message()  # email would turn raw 8-bit bytes into U+FFFD; decode them first
        source[header] = unfolded(raw, hints)
    try:
        value = source.get_param(name, None, header)
    except Exception:  # noqa: BLE001 - hostile parameter syntax
        return None
    if isinstance(value, tuple):
        charset, _, text = value
        return decode_bytes(_param_bytes(text), charset or None, hints)[0]
    return value if isinstance(value, str) else None


def stored_payload(part: Message) -> list[Message] | str | None:
    """The payload as parsed: a list of parts, or the undecoded text (8-bit kept as surrogates).

    Message.get_payload() re-decodes 8-bit text with the declared charset, which is lossy,
    costs a pass over the data, and raises for labels such as 'undefined'.
    """
    return part._payload  # noqa: SLF001 - the one place that reads it


def raw_header(part: Message, name: str) -> str | None:
    """The first value of a header as parsed (raw 8-bit kept as surrogates), or None.

    Message.get() would hand back an email.header.Header with U+FFFD for raw 8-bit bytes.
    """
    return next((str(v) for k, v in part.raw_items() if k.lower() == name), None)


def uudecode(data: bytes) -> bytes:
    """Decode uuencoded lines, with or without the 'begin'/'end' lines."""
    lines = data.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith(b"begin ")), 0)
    out = []
    for line in lines[start:]:
        if line.strip() == b"end":
            break
        if not line.strip() or line.strip() == b"`":
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            try:  # trailing garbage after the counted bytes, as the uu module tolerates
                out.append(binascii.a2b_uu(line[:(((line[0] - 32) & 63) * 4 + 5) // 3]))
            except binascii.Error:
                continue
    return b"".join(out)


def _param_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def declared_charsets(message: Message) -> list[str]:
    """Charset labels declared anywhere in the message, in order, without repeats."""
    found: dict[str, None] = {}
    for part in iter_parts(message):
        label = param(part, "charset")
        if label and codec_for(label) not in (None, "ascii"):
            found.setdefault(label.lower(), None)
    return list(found)


@dataclass
class MimeContent:
    """What the walk found: body chunks, attachments, report data, defects."""

    chunks: list[tuple[str, str]] = field(default_factory=list)  # ("plain"|"html"|"html-alt", text)
    delivery_status: list[list[dict[str, str]]] = field(default_factory=list)
    disposition: list[dict[str, str]] = field(default_factory=list)
    original_ids: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    tnef_bodies: list[tuple[str, str]] = field(default_factory=list)  # the text inside winmail.dat


class MimeWalker:
    """Sorts the parts of one message into body chunks, attachments and report data."""

    def __init__(self, sink: AttachmentSink, hints: list[str], raw: bytes = b"") -> None:
        self.sink = sink
        self.hints = hints
        self.content = MimeContent()
        self.raw = raw  # the mail as it came: where each file's encoded body lies (its span)
        self._searched = 0  # the spans found so far end here

    def walk(self, message: Message) -> MimeContent:
        chunks = self._part(message, 0)
        if not any(kind in ("plain", "html") and text.strip() for kind, text in chunks):
            chunks += self.content.tnef_bodies  # Outlook's text only in winmail.dat
        self.content.chunks = chunks
        return self.content

    def _part(self, part: Message, depth: int) -> list[tuple[str, str]]:
        self._note_defects(part)
        if depth > MAX_DEPTH:
            self.content.defects.append(f"parts nested deeper than {MAX_DEPTH} levels ignored")
            return []
        payload = stored_payload(part)
        maintype = part.get_content_maintype()
        if maintype == "multipart" and isinstance(payload, list):
            children = [c for c in payload if isinstance(c, Message)]
            if part.get_content_subtype() == "alternative":
                return self._alternative(children, depth)
            return [chunk for child in children for chunk in self._part(child, depth + 1)]
        if maintype == "multipart":
            self.content.defects.append("multipart without usable boundary read as text")
            return self._text(part, "text/plain")
        return self._leaf(part)

    def _alternative(self, children: list[Message], depth: int) -> list[tuple[str, str]]:
        """Keep the plain-text alternative as text and the others' HTML as html only."""
        variants = [self._part(child, depth + 1) for child in children]
        chosen = (next((v for v in variants if any(k == "plain" and t.strip() for k, t in v)), None)
                  or next((v for v in reversed(variants) if any(k == "html" for k, _ in v)), None)
                  or next((v for v in reversed(variants) if v), []))
        chunks = list(chosen)
        for variant in variants:
            if variant is not chosen:
                chunks.extend(("html-alt", t) for k, t in variant if k in ("html", "html-alt"))
        return chunks

    def _leaf(self, part: Message) -> list[tuple[str, str]]:
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        name = self._filename(part)
        if ctype in _BODY_TYPES and disposition != "attachment" and not name:
            return self._text(part, ctype)
        if ctype == "message/rfc822":
            self._nested_message(part, name)
        elif ctype in _TNEF_TYPES or (name or "").lower() == "winmail.dat":
            self._tnef(part, name, ctype)
        else:
            self._report_part(part, ctype)
            self._attach(part, name, ctype, self._payload_bytes(part), disposition, self._span(part))
        return []

    def _span(self, part: Message) -> tuple[int, int, str] | None:
        """Where the encoded body of a leaf part lies in the raw mail, found by its first and
        last bytes after the previous one's; None when it cannot be told.

        Reading the file back (:mod:`mailbot.files`) decodes that slice and checks it against
        the file's SHA-256, so a wrong guess costs a parse, never a wrong file.
        """
        payload = stored_payload(part)
        cte = (raw_header(part, "content-transfer-encoding") or "").strip().lower()
        if not isinstance(payload, str) or not payload or \
                cte not in (*_IDENTITY, "base64", "quoted-printable"):
            return None
        try:
            head = payload[:_SPAN_PROBE].encode("ascii", "surrogateescape")
            tail = payload[-_SPAN_PROBE:].encode("ascii", "surrogateescape")
        except UnicodeEncodeError:  # not bytes as they came (a str the parser made)
            return None
        start = self.raw.find(head, self._searched)
        end = start + len(payload)
        if start < 0 or self.raw[end - _SPAN_PROBE:end] != tail:
            return None
        self._searched = end
        return start, end, cte or "7bit"

    def _text(self, part: Message, ctype: str) -> list[tuple[str, str]]:
        data = self._payload_bytes(part)
        label = param(part, "charset") or (sniff_html_charset(data) if ctype == "text/html" else None)
        text, defect = decode_bytes(data, label, self.hints)
        if defect:
            self.content.defects.append(defect)
        text = normalize_newlines(text)
        if ctype == "text/html":
            return [("html", text)]
        if (param(part, "format") or "").lower() == "flowed":
            text = unflow(text, (param(part, "delsp") or "").lower() == "yes")
        return [("plain", text)]

    def _payload_bytes(self, part: Message) -> bytes:
        """The decoded bytes of a leaf part (base64 decoded without extra copies)."""
        payload = stored_payload(part)
        if isinstance(payload, list):
            return self._serialized(part)
        cte = (raw_header(part, "content-transfer-encoding") or "").strip().lower()
        if cte in _UUENCODE:
            return uudecode(str(payload or "").encode("utf-8", "surrogateescape"))
        if cte in _IDENTITY or not isinstance(payload, str):
            return str(payload or "").encode("utf-8", "surrogateescape")
        if cte == "base64":
            try:
                return binascii.a2b_base64(payload)
            except (ValueError, binascii.Error):
                pass
        try:
            data = part.get_payload(decode=True)
        except Exception:  # noqa: BLE001 - uu/qp decoders on garbage
            self.content.defects.append(f"could not decode {cte or '7bit'} payload; kept raw")
            data = None
        if isinstance(data, bytes):
            return data
        return str(payload or "").encode("utf-8", "surrogateescape")

    def _serialized(self, part: Message) -> bytes:
        """Bytes of a message/* part's payload, as a file (nested .eml, report text)."""
        children = [c for c in stored_payload(part) or () if isinstance(c, Message)]
        data = b"\n".join(_flatten(child) for child in children)
        cte = (raw_header(part, "content-transfer-encoding") or "").strip().lower()
        try:
            if cte == "base64":  # not allowed on message/*, but sent: the parsed "message" is base64 text
                return binascii.a2b_base64(data.split(b"\n\n", 1)[-1])
            if cte == "quoted-printable":
                return binascii.a2b_qp(data)
        except (ValueError, binascii.Error):
            self.content.defects.append(f"could not decode {cte} message part; kept as is")
        return data

    def _filename(self, part: Message) -> str | None:
        for name, header in (("filename", "content-disposition"), ("name", "content-type")):
            value = param(part, name, header, self.hints)
            if value and value.strip():
                return decode_header_value(value, self.hints)
        return None

    def _nested_message(self, part: Message, name: str | None) -> None:
        children = [c for c in stored_payload(part) or () if isinstance(c, Message)] if part.is_multipart() else []
        if children:
            mid = first_message_id(raw_header(children[0], "message-id"))
            if mid:
                self.content.original_ids.append(mid)
            if not name:
                subject = decode_header_value(raw_header(children[0], "subject") or "", self.hints)
                name = f"{subject}.eml" if subject else None
        self._attach(part, name, "message/rfc822", self._payload_bytes(part), part.get_content_disposition())

    def _tnef(self, part: Message, name: str | None, ctype: str) -> None:
        data = self._payload_bytes(part)
        content = expand_tnef(data)
        if content is not None and content.body:
            self.content.tnef_bodies.append(content.body)
        if content is None or not content.files:
            if content is None or not content.body:
                self.content.defects.append("winmail.dat kept as is: no files could be extracted")
                self._attach(part, name, ctype, data, part.get_content_disposition())
            return
        for inner_name, inner in content.files:
            self.sink.add(inner_name, _guess_type(inner_name), inner)

    def _report_part(self, part: Message, ctype: str) -> None:
        if ctype == "message/delivery-status":
            self.content.delivery_status.append(self._fields(part))
        elif ctype == "message/disposition-notification":
            self.content.disposition.extend(self._fields(part))
        elif ctype == "text/rfc822-headers":
            blocks = field_blocks(self._payload_bytes(part).decode("utf-8", "replace"))
            mid = first_message_id(blocks[0].get("message-id")) if blocks else None
            if mid:
                self.content.original_ids.append(mid)

    def _fields(self, part: Message) -> list[dict[str, str]]:
        """Field blocks of a report part, whether email parsed them or left text."""
        payload = stored_payload(part)
        if isinstance(payload, list):
            blocks = [{k.lower(): decode_header_value(v, self.hints) for k, v in child.raw_items()}
                      for child in payload if isinstance(child, Message)]
            return [b for b in blocks if b]
        return field_blocks(self._payload_bytes(part).decode("utf-8", "replace"))

    def _attach(self, part: Message, name: str | None, ctype: str, data: bytes, disposition: str | None,
                span: tuple[int, int, str] | None = None) -> None:
        cid = decode_header_value(raw_header(part, "content-id") or "").strip("<>").strip() or None
        inline = disposition == "inline" or (disposition is None and cid is not None)
        self.sink.add(name, ctype, data, content_id=cid, inline=inline, span=span)

    def _note_defects(self, part: Message) -> None:
        for defect in getattr(part, "defects", ()):
            self.content.defects.append(type(defect).__name__)


def _flatten(message: Message) -> bytes:
    """A parsed (sub)message back to bytes; a damaged one as well as it can be."""
    try:
        return message.as_bytes()
    except Exception:  # noqa: BLE001 - the generator trips on damaged headers
        try:
            return message.as_string().encode("utf-8", "surrogateescape")
        except Exception:  # noqa: BLE001
            payload = stored_payload(message)  # a list of parts has no bytes of its own (its repr has addresses)
            return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


def _guess_type(name: str | None) -> str:
    return (mimetypes.guess_type(name or "", strict=False)[0] or "application/octet-stream").lower()
