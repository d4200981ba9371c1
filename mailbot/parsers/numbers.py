"""Request numbers (ТП-2026-000123) and incident numbers (INC-000045) in free text.

Matching is case-insensitive and folds Cyrillic/Latin look-alike letters onto one
alphabet, so "TП-2026-000123" (Latin T) and "ІNС-000045" (Cyrillic І and С) are found;
any dash (- ‐ ‑ ‒ – — ― −) with optional spaces separates the parts.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

# Cyrillic letters that look like Latin ones (after lower-casing), mapped to the Latin letter.
_HOMOGLYPHS = str.maketrans("асеорхукмтнвіјѕԁ", "aceopxykmthbijsd")
_DASH = r"[-\u2010-\u2015\u2212]"


def _fold(text: str) -> str:
    return text.lower().translate(_HOMOGLYPHS)


@functools.lru_cache(maxsize=16)
def _request_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?<!\w){re.escape(_fold(prefix))}\s*{_DASH}?\s*(?<![0-9])([0-9]{{4}})\s*{_DASH}\s*([0-9]{{1,6}})(?![0-9])")


@functools.lru_cache(maxsize=16)
def _incident_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(_fold(prefix))}\s*{_DASH}\s*([0-9]{{1,6}})(?![0-9])")


def find_request_numbers(text: str, prefix: str = "ТП") -> tuple[str, ...]:
    """Request numbers in `text`, normalised to PREFIX-YYYY-NNNNNN, in order, without repeats."""
    found = (f"{prefix}-{m.group(1)}-{int(m.group(2)):06d}" for m in _request_pattern(prefix).finditer(_fold(text)))
    return tuple(dict.fromkeys(found))


def find_incident_numbers(text: str, prefix: str = "INC") -> tuple[str, ...]:
    """Incident numbers in `text`, normalised to PREFIX-NNNNNN, in order, without repeats."""
    found = (f"{prefix}-{int(m.group(1)):06d}" for m in _incident_pattern(prefix).finditer(_fold(text)))
    return tuple(dict.fromkeys(found))


def incident_number(text: str, prefix: str = "INC") -> str:
    """The number of the incident `text` names (``INC-45``, ``[ІNС-000045]``: ``INC-000045``);
    `text` as it is, stripped, when it holds none."""
    found = find_incident_numbers(text, prefix)
    return found[0] if found else text.strip()


def numbers_in(texts: Iterable[str], prefix: str,
               finder: Callable[[str, str], tuple[str, ...]]) -> tuple[str, ...]:
    """Numbers found by `finder` in several texts (subject first), in order, without repeats."""
    found: dict[str, None] = {}
    for text in texts:
        for number in finder(text, prefix):
            found.setdefault(number, None)
    return tuple(found)
