"""The new text of a reply: quoted history, forwarded headers and signature removed.

Own patterns cover English and Russian clients (Outlook, Thunderbird «… пишет:», Gmail,
"-----Исходное сообщение-----") and the attribution and header lines of other European
clients (the phrases mail-parser-reply knows). Every pattern takes time linear in the line
it reads: no two neighbouring quantifiers can match the same characters (or they are
possessive), and a line's closing ':' is checked in Python rather than after a '.*'.
mail-parser-reply's own expressions are not used: their nested lazy quantifiers under
negative lookaheads take milliseconds per line on hostile lines (seconds per message).
"""
from __future__ import annotations

import re

_ATTRIBUTION_WIDTH = 400

_SEPARATOR = re.compile(
    r"\s*+[-_=*]{2,}+\s*+(?:original message|исходное сообщение|пересылаемое сообщение|"
    r"оригинальное сообщение|forwarded message|пересланное сообщение|ursprüngliche nachricht|"
    r"weitergeleitete nachricht|message d'origine|mensaje original|messaggio originale)\s*+[-_=*]{2,}+\s*+$",
    re.I,
)
_FORWARD_SEPARATOR = re.compile(
    r"\s*+[-_=*]{2,}+\s*+(?:пересылаемое сообщение|forwarded message|пересланное сообщение|"
    r"weitergeleitete nachricht)\s*+[-_=*]{2,}+\s*+$", re.I)
# a forward's subject: "Fwd:", "FW:", "Пересл.:", "Переслано:" (after any "Re:")
_FORWARD_SUBJECT = re.compile(r"^\s*(?:(?:re|ответ|отв)\s*:\s*)*(?:fwd?|пересл\.?|переслано)\s*:", re.I)
# what mail programs put before a subject they answer or forward, piled up ("Re: FW: Fwd[2]:")
_PREFIXES = re.compile(r"^(?:\s*+(?:re|aw|sv|ответ|отв|fwd?|wg|tr|пересл\.?|переслано)"
                       r"\s*+(?:\[\d+\]|\(\d+\))?\s*+:)+\s*+", re.I)
_QUOTED = r"\s*+(?:>\s*+)*+"
# an attribution line without its closing ':' (and the spaces around it): the verb ends it …
_ATTRIBUTION = re.compile(
    _QUOTED + r"(?:(?:on|am|le|el|il)\s.*\s(?:wrote|schrieb|a écrit|escribió|ha scritto)"
    r"|.*\s(?:пишет|написал|написала|написал\(а\)|писал|писала)"
    r"|.*\d{4}\s*+г\.\s*+в\s*+\d{1,2}:\d{2}.*)",
    re.I,
)
# … or the name follows it ("Am 20.03.2026 um 12:00 schrieb Hans Meier:"): matched from the start
_OTHER_ATTRIBUTION = re.compile(
    _QUOTED + r"(?:am\s.*?\sschrieb|le\s.*?\sa écrit|el\s.*?\sescribió|il\s.*?\sha scritto"
    r"|op\s.*?\sschreef|dnia\s.*?\s(?:nadesłał|napisał\(a\))|dne\s.*?\snapsal\(a\)"
    r"|(?:den|mån|tis|ons|tor|fre|lör|sön|man|tir|lør|søn|\d).*?\sskrev)\b",
    re.I,
)
# any client's attribution (Gmail for Android «ср, 25 нояб. 2026 г., 10:00 Name <a@b>:», Yandex,
# Mail.ru «Среда, 25 ноября 2026, 10:00 +03:00 от Name <a@b>:»): a time and an address, when
# quoted lines follow it
_TIME_AND_ADDRESS = re.compile(r"[^\n]*?\b\d{1,2}:\d{2}\b[^\n]*?@[^\n]*")
_FROM_LINE = re.compile(r"\s*+[*>]*+\s*+\**+(?:from|от|von|de|od|da|van|fra|från)\s*+\**+:", re.I)
_HEADER_LINE = re.compile(
    r"\s*+[*>]*+\s*+\**+(?:sent|date|to|subject|cc|отправлено|дата|кому|тема|копия|gesendet|datum|an|betreff|"
    r"envoyé|enviado|para|asunto|objet|à|inviato|oggetto|verzonden|aan|onderwerp|wysłano|temat|do|"
    r"odesláno|komu|předmět|skickat|till|ämne|sendt|til|emne)\s*+\**+:",
    re.I,
)
_SIGNATURE = re.compile(
    r"--\s?$|(?:sent from my|sent from mail for|sent from outlook|sent from yahoo mail|get outlook for|"
    r"получить outlook для|отправлено с |отправлено из |von meinem .* gesendet)", re.I)
_RULE = re.compile(r"\s*+[-_=*]{5,}+\s*+$")
_FORMULA = (r"(?:с уважением|с наилучшими пожеланиями|всего (?:доброго|хорошего)|спасибо|"
            r"(?:best |kind |warm )?regards|best wishes|(?:yours )?sincerely|thanks|thank you|cheers)")
# A closing formula on a line of its own: the line after it is where people sign their name
CLOSING = re.compile(rf"^\s*{_FORMULA}\W*$", re.IGNORECASE | re.MULTILINE)
_SIGNATURE_LINES = 8  # a signature block: at most this many non-blank lines at the end …
_SIGNATURE_WIDTH = 100  # … none of them longer than this
_QUOTE_MARKS = re.compile(r"^[\s>|]+")
_LETTER = re.compile(r"[^\W\d_]")
_SAME_LINE = 12  # lines shorter than this ("Здравствуйте!", "Статус") are too common to compare


def _outlook_header_at(lines: list[str], index: int) -> bool:
    """A 'From:' line followed within a few lines by Sent/To/Subject-style header lines."""
    if not _FROM_LINE.match(lines[index]):
        return False
    following = [line for line in lines[index + 1:index + 6] if line.strip()][:3]
    return any(_HEADER_LINE.match(line) for line in following)


def _is_attribution(line: str) -> bool:
    """«… пишет:», "On … wrote:" and the like: a short line ending with ':'."""
    if len(line) > _ATTRIBUTION_WIDTH:
        return False
    head = line.rstrip()
    if not head.endswith(":"):
        return False
    return (_ATTRIBUTION.fullmatch(head[:-1].rstrip()) is not None
            or _OTHER_ATTRIBUTION.match(head) is not None)


def _quote_follows(lines: list[str], index: int) -> bool:
    """Whether the first non-blank line after ``index`` is a quoted line."""
    following = next((line for line in lines[index + 1:index + 4] if line.strip()), "")
    return following.lstrip().startswith(">")


def _is_quote_header(lines: list[str], index: int) -> bool:
    """A short line with a time and an address, ending with ':', above quoted lines."""
    line = lines[index].rstrip()
    return (len(line) <= _ATTRIBUTION_WIDTH and line.endswith(":") and not line.lstrip().startswith(">")
            and _TIME_AND_ADDRESS.fullmatch(line) is not None and _quote_follows(lines, index))


def _first_marker(lines: list[str]) -> tuple[int, int | None]:
    """(index of the first line of quoted history, the line after it when it is an attribution)."""
    for index, line in enumerate(lines):
        if _SEPARATOR.match(line) or _outlook_header_at(lines, index) or _header_block_at(lines, index):
            return index, None
        if _is_attribution(line) or _is_quote_header(lines, index):
            return index, index + 1
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if following.rstrip().endswith(":") and _is_attribution(f"{line} {following}"):
            return index, index + 2  # "On … <" and "… > wrote:": an attribution wrapped by the client
    return len(lines), None


def _header_block_at(lines: list[str], index: int) -> bool:
    """Two header lines in a row ("Date: …", "Subject: …"): a forwarded or quoted header block."""
    return (index + 1 < len(lines) and _is_header(lines[index]) and _is_header(lines[index + 1]))


def _is_header(line: str) -> bool:
    return _FROM_LINE.match(line) is not None or _HEADER_LINE.match(line) is not None


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


def without_prefixes(subject: str) -> str:
    """The subject without the "Re:", "Fwd:", "FW:", "Ответ:", "Пересл.:" before it."""
    return _PREFIXES.sub("", subject)


def is_forward_subject(subject: str) -> bool:
    """A forward's subject: "Fwd:", "FW:", "Пересл.:", "Переслано:" (after any "Re:")."""
    return _FORWARD_SUBJECT.match(subject) is not None


def reply_parts(text: str) -> tuple[str, bool]:
    """(the text the sender wrote in this message, without history and signature; whether the
    history below it starts with a forward's separator: "-------- Пересылаемое сообщение --------",
    "---------- Forwarded message ---------")."""
    lines = text.split("\n")
    cut, after = _first_marker(lines)
    kept = _unsigned(lines[:cut])
    if not any(line.strip() for line in kept) and after is not None:
        kept = _unsigned(lines[after:])  # answers written between quoted lines
    forward = cut < len(lines) and _FORWARD_SEPARATOR.match(lines[cut]) is not None
    return "\n".join(kept).strip("\n"), forward


def without_signature(text: str, name: str) -> str:
    """``text`` without the writer's own signature block at its end: from a line that names the
    writer (``name``'s first word, the surname: "Сидоров С.С.", "С уважением, Сидоров") or from
    the closing formula above such a line, to the end, when that is a few short lines."""
    surname = name.split()[0] if name.split() else ""
    if len(surname) < 3:
        return text
    naming = re.compile(rf"(?<!\w){re.escape(surname)}(?!\w)", re.IGNORECASE)
    lines = text.rstrip().split("\n")
    written = [i for i, line in enumerate(lines) if line.strip()]
    first = max(1, len(written) - _SIGNATURE_LINES)
    for place, index in enumerate(written[first:], start=first):
        line = lines[index]
        signed = naming.search(line) is not None and len(line) <= _SIGNATURE_WIDTH // 2
        if CLOSING.match(line) and place + 1 < len(written):
            signed = naming.search(lines[written[place + 1]]) is not None
        if signed:
            if all(len(rest) <= _SIGNATURE_WIDTH for rest in lines[index:]):
                return "\n".join(lines[:index]).rstrip()
            return text
    return text


def comparable_lines(text: str) -> set[str]:
    """The lines of ``text`` as a quote keeps them, to be found in another text: quote marks and
    runs of spaces dropped (Outlook's HTML quote collapses the card's alignment), lines with a
    letter and at least ``_SAME_LINE`` characters."""
    found = set()
    for line in text.split("\n"):
        key = " ".join(_QUOTE_MARKS.sub("", line).split())
        if len(key) >= _SAME_LINE and _LETTER.search(key):
            found.add(key)
    return found
