"""Text from mail as people are shown it: no control characters, no invisible direction changes.

Names, subjects and file names come from anyone. A C1 control (U+0080–U+009F)
can drive a terminal or hide text, and a bidi control turns ``invoice\\u202egpj.exe``
into what looks like ``invoiceexe.jpg``. Controls become spaces (line breaks and
tabs stay in multi-line text); bidi controls go: the embeddings, overrides and
isolates (U+202A–U+202E, U+2066–U+2069) and the implicit marks LRM, RLM and ALM
(U+200E, U+200F, U+061C), which have no glyph and are of no use in Russian
support mail. Used where text is parsed (``headers.clean_text``) and where it
leaves us: outgoing headers, staff templates, the CLI.
"""
from __future__ import annotations

import re

DIRECTION_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROL_CHARS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029"  # C0 but LF and tab, DEL, C1, LS, PS
_CONTROLS = re.compile(f"[{_CONTROL_CHARS}]")
_DIRECTION = re.compile(f"[{DIRECTION_CONTROLS}]+")
_HIDDEN = re.compile(f"[{_CONTROL_CHARS}{DIRECTION_CONTROLS}]")


def visible(text: str) -> str:
    """``text`` with controls other than line feed and tab as spaces and bidi controls removed."""
    if _HIDDEN.search(text) is None:  # nearly always: one pass, and the text as it is
        return text
    return _DIRECTION.sub("", _CONTROLS.sub(" ", text))


def one_line(text: str) -> str:
    """:func:`visible` text on one line: every run of whitespace (line breaks too) one space."""
    return " ".join(visible(text).split())
