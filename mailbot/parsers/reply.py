"""The new text of a reply: quoted history, forwarded headers and signature removed.

Own patterns cover English and Russian clients (Outlook, Thunderbird «… пишет:», Gmail,
"-----Исходное сообщение-----"); mail-parser-reply's header patterns add other European
languages.  Its regexes are run on a bounded probe (short lines, first lines only), since
their nested lazy quantifiers are super-linear on long lines.
"""
from __future__ import annotations

import re

from mailparser_reply.parser import EmailMessage

_PROBE_LINES = 2000
_PROBE_WIDTH = 300
_ATTRIBUTION_WIDTH = 400

_SEPARATOR = re.compile(
    r"\s*[-_=*]{2,}\s*(?:original message|исходное сообщение|пересылаемое сообщение|"
    r"оригинальное сообщение|forwarded message|пересланное сообщение|ursprüngliche nachricht|"
    r"weitergeleitete nachricht|message d'origine|mensaje original|messaggio originale)\s*[-_=*]{2,}\s*$",
    re.I,
)
_ATTRIBUTION = re.compile(
    r"\s*(?:>\s*)*(?:(?:on|am|le|el|il)\s.*\s(?:wrote|schrieb|a écrit|escribió|ha scritto)"
    r"|.*\s(?:пишет|написал|написала|писал|писала)"
    r"|.*\d{4}\s*г\.\s*в\s*\d{1,2}:\d{2}.*)\s*:\s*$",
    re.I,
)
_FROM_LINE = re.compile(r"\s*[*>]*\s*\**(?:from|от|von|de|od|da|van|fra|från)\s*\**:", re.I)
_HEADER_LINE = re.compile(
    r"\s*[*>]*\s*\**(?:sent|date|to|subject|cc|отправлено|дата|кому|тема|копия|gesendet|datum|an|betreff|"
    r"envoyé|enviado|para|asunto|objet|à)\s*\**:",
    re.I,
)
_SIGNATURE = re.compile(
    r"--\s?$|(?:sent from my|get outlook for|отправлено с |отправлено из |von meinem .* gesendet)", re.I)
_RULE = re.compile(r"\s*[-_=*]{5,}\s*$")
_OTHER_LANGUAGES = EmailMessage(text="", languages=["de", "fr", "es", "it", "nl", "pl", "cs", "sv", "da"]).HEADER_REGEX


def _outlook_header_at(lines: list[str], index: int) -> bool:
    """A 'From:' line followed within a few lines by Sent/To/Subject-style header lines."""
    if not _FROM_LINE.match(lines[index]):
        return False
    following = [line for line in lines[index + 1:index + 6] if line.strip()][:3]
    return any(_HEADER_LINE.match(line) for line in following)


def _library_marker(lines: list[str]) -> int | None:
    """First line where mail-parser-reply's multi-language header patterns match."""
    probe = "\n".join(line[:_PROBE_WIDTH] for line in lines[:_PROBE_LINES])
    found = _OTHER_LANGUAGES.search(probe)
    if not found:
        return None
    index = probe.count("\n", 0, found.start())
    return index + 1 if probe[found.start():found.start() + 1] == "\n" else index


def _first_marker(lines: list[str]) -> tuple[int, bool]:
    """(index of the first line of quoted history, whether it is an attribution line)."""
    for index, line in enumerate(lines):
        if _SEPARATOR.match(line) or _outlook_header_at(lines, index):
            return index, False
        if len(line) <= _ATTRIBUTION_WIDTH and _ATTRIBUTION.match(line):
            return index, True
    return len(lines), False


def _unsigned(lines: list[str]) -> list[str]:
    """Lines up to a signature separator, without quoted lines or trailing rules."""
    out: list[str] = []
    for line in lines:
        if _SIGNATURE.match(line):
            break
        if not line.lstrip().startswith(">"):
            out.append(line)
    while out and (not out[-1].strip() or _RULE.match(out[-1])):
        out.pop()
    return out


def new_text(text: str) -> str:
    """The text the sender wrote in this message, without history and signature."""
    lines = text.split("\n")
    cut, attribution = _first_marker(lines)
    library = _library_marker(lines[:cut])
    if library is not None and library < cut:
        cut, attribution = library, False
    kept = _unsigned(lines[:cut])
    if not any(line.strip() for line in kept) and attribution:
        kept = _unsigned(lines[cut + 1:])  # answers written between quoted lines
    return "\n".join(kept).strip("\n")
