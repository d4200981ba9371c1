"""Bytes to text for mail: charset labels as mailers write them, and guessing when they lie.

Declared labels are mapped the way browsers map them (WHATWG: ``iso-8859-1`` means
windows-1252, ``gb2312`` means GBK/GB18030, ...).  When a declared charset fails, or
none is declared, :func:`guess_decode` tries UTF-8, then the message's other declared
charsets, then scores single-byte Cyrillic/Latin candidates (cp1251, koi8-r, cp1252)
by how plausible the resulting words look.
"""
from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable

from charset_normalizer import from_bytes as _normalizer_best

# Labels seen in the wild that Python does not know, or knows as a narrower charset.
_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso8859-1": "cp1252",
    "gb2312": "gb18030",
    "iso-gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "x-gbk": "gb18030",
    "gbk": "gb18030",
    "euc-cn": "gb18030",
    "chinese": "gb18030",
    "unicode-1-1-utf-7": "utf-7",
    "x-utf-7": "utf-7",
    "utf7": "utf-7",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "big5": "big5hkscs",
    "tis-620": "cp874",
    "koi8r": "koi8-r",
    "koi8": "koi8-r",
    "koi8u": "koi8-u",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}
# What mislabelled text in a charset family usually really is.
_FAMILY = {
    "iso2022_jp_ext": ("cp932", "euc_jp"),
    "cp932": ("euc_jp",),
    "euc_jp": ("cp932",),
    "koi8-r": ("cp1251",),
    "cp1251": ("koi8-r",),
    "gb18030": ("big5hkscs",),
    "big5hkscs": ("gb18030",),
}
# Codecs that are not text charsets or that interpret escapes: never apply a mail label to them.
_UNSAFE = {"undefined", "unicode_escape", "raw_unicode_escape", "idna", "punycode", "mbcs", "oem"}
_WIN_LABEL = re.compile(r"^(?:x-)?(?:win(?:dows)?|cp|ms)[-_ ]?(\d{3,4})$")
_SINGLE_BYTE_GUESSES = ("cp1251", "koi8-r", "cp1252")
_WORD = re.compile(r"[^\W\d_]+")
_ODD_SYMBOL = re.compile(r"[\x80-\x9f\u2500-\u25ff\u0402-\u040f\u0452-\u045f\u0490\u0491\ufffd]")
# Relative frequencies (per mille) of Russian letters, to tell cp1251 from koi8-r.
_RU_FREQ = dict(zip("оеаинтсрвлкмдпуяызьбгчйхжшюцщэфъё",
                    (110, 85, 80, 74, 67, 63, 55, 47, 45, 44, 35, 32, 30, 28, 26, 20, 19, 16, 17,
                     16, 17, 14, 12, 10, 9, 7, 6, 5, 4, 3, 3, 1, 1)))
_MIN_BYTES_FOR_DETECTOR = 24


@functools.lru_cache(maxsize=256)
def codec_for(label: str | None) -> str | None:
    """The Python codec name for a charset label from a mail, or None if unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    win = _WIN_LABEL.match(name)
    if win:
        name = "cp" + win.group(1)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _UNSAFE:
        return None
    return info.name


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except Exception:  # noqa: BLE001 - some codecs raise odd errors on odd input
        return None


def _mostly_utf8(data: bytes) -> str | None:
    """UTF-8 with a few damaged bytes: keep it UTF-8 rather than re-guessing everything."""
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 0x7F) - bad
    return text if good >= 10 * bad and good > 0 else None


def plausibility(text: str) -> int:
    """Score how much `text` looks like real words (higher is better)."""
    score = 0
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        cyr = sum(1 for ch in word if "\u0400" <= ch <= "\u04ff")
        if cyr and cyr != len(word):
            score -= 2 * len(word)
            continue
        cased = word.islower() or word.isupper() or word.istitle()
        score += len(word) if cased else -len(word)
        if cyr:
            score += sum(_RU_FREQ.get(ch, 0) for ch in word.lower()) // 20
            score += sum(1 for ch in word if ch.islower())
    return score - 3 * len(_ODD_SYMBOL.findall(text))


def _expand(hints: Iterable[str | None]) -> list[str]:
    """Codec names for hint labels, each followed by its family, without repeats."""
    seen: dict[str, None] = {}
    for label in hints:
        codec = codec_for(label)
        if codec:
            seen.setdefault(codec, None)
            for extra in _FAMILY.get(codec, ()):
                seen.setdefault(extra, None)
    return list(seen)


def _is_single_byte(codec: str) -> bool:
    return codec.startswith(("cp12", "cp8", "iso8859", "koi8", "mac", "latin", "cp437", "cp850", "cp866"))


def guess_decode(data: bytes, hints: Iterable[str | None] = ()) -> tuple[str, str]:
    """Decode bytes of unknown charset; return (text, codec used)."""
    if data.isascii():
        return data.decode("ascii"), "ascii"
    text = _strict(data, "utf-8")
    if text is not None:
        return text, "utf-8"
    hinted = _expand(hints)
    for codec in hinted:
        if not _is_single_byte(codec):
            text = _strict(data, codec)
            if text is not None:
                return text, codec
    candidates = [c for c in hinted if _is_single_byte(c) and c not in _SINGLE_BYTE_GUESSES]
    candidates += _SINGLE_BYTE_GUESSES
    best_text, best_codec, best_score = "", "", None
    for codec in candidates:
        text = _strict(data, codec)
        if text is None:
            continue
        score = plausibility(text) + (len(data) // 8 if codec in hinted else 0)
        if best_score is None or score > best_score:
            best_text, best_codec, best_score = text, codec, score
    if (best_score is None or best_score <= 0) and len(data) >= _MIN_BYTES_FOR_DETECTOR:
        match = _normalizer_best(data).best()
        if match is not None and match.encoding:
            return str(match), match.encoding
    if best_score is None:
        return data.decode("utf-8", "replace"), "utf-8"
    return best_text, best_codec


def decode_bytes(data: bytes, label: str | None, hints: Iterable[str | None] = ()) -> tuple[str, str | None]:
    """Decode text bytes declared as `label`; return (text, defect or None)."""
    codec = codec_for(label)
    if codec is None:
        text, used = guess_decode(data, hints)
        return text, (f"charset {label!r} unknown, guessed {used}" if label and not data.isascii() else None)
    text = _strict(data, codec)
    if text is not None:
        return text, None
    if codec == "utf-8":
        text = _mostly_utf8(data)
        if text is not None:
            return text, "damaged utf-8 bytes replaced"
    for extra in _FAMILY.get(codec, ()):
        text = _strict(data, extra)
        if text is not None:
            return text, f"charset {label!r} did not fit, used {extra}"
    text, used = guess_decode(data, hints)
    return text, f"charset {label!r} did not fit, guessed {used}"


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def sniff_html_charset(data: bytes) -> str | None:
    """The charset named by an HTML <meta> tag near the start of the document."""
    found = _META_CHARSET.search(data[:4096])
    return found.group(1).decode("ascii") if found else None
