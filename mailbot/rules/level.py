"""Which assistance level (ОП1, ОП2, ОП3) a new request needs, from its words.

The keyword lists are ``[classify]`` in the config (defaults from the
regulation's definitions of the levels). Matching works on Russian Snowball
stems, so inflected forms match: "перепривязки", "скриншоты", "сбоя". Two
stemmer quirks are smoothed over: a fleeting vowel in "-ок"/"-ек" is dropped
("ошибок" ~ "ошибка", "настроек" ~ "настройка"), and stems of six letters or
more also match a stem at most two letters longer ("дистрибутива" ~
"дистрибутив", "настроить" ~ "настройка"). A phrase matches as a sequence of
stems in adjacent words ("не работает" matches "не работает", never a bare
"работает"; "лог-файлы" is the two words "лог" and "файлы").

Decisions where the regulation is silent:

- When keywords of several levels match, the most severe level wins:
  ОП3 > ОП2 > ОП1. The level picks the procedure and the staff, not only the
  norm: a failure must reach the ОП3 procedure (known-error search, incident
  link, the way to ОП4) and qualified staff, while files or settings named in
  a failure report ("лог во вложении") are material, not the request itself.
- A keyword right after a negation ("не", "нет", "без", "ни") does not count:
  "установка прошла без ошибок" is no ОП3 request. Keywords that themselves
  start with "не" ("не работает") are unaffected. A negation after the word
  ("ошибок нет") is not recognised: "файла нет" is a request for a file.
- No keyword: ``classify.default_level`` (ОП1, the level of typical requests).
- ОП4 is never assigned at intake: the regulation opens it only from an open
  ОП3 request.
"""
from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import snowballstemmer

from ..config import ClassifyConfig
from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Action, Verdict

NEGATIONS = frozenset({"не", "нет", "без", "ни"})
WORD = re.compile(r"[0-9a-zа-я]+")
FLEETING_AFTER_CONSONANT = re.compile(r"(?<=[^аеиоуыэюяй])[ое]к$")  # ошибок → ошибк
FLEETING_AFTER_VOWEL = re.compile(r"(?<=[аеиоуыэюя])ек$")  # настроек → настройк
PREFIX_MIN, PREFIX_SLACK = 6, 2

_stemmer = snowballstemmer.stemmer("russian")
_stemmer_lock = threading.Lock()  # a Snowball stemmer object is not thread-safe


@functools.lru_cache(maxsize=100_000)
def stem(word: str) -> str:
    """The canonical stem of one lower-case word."""
    with _stemmer_lock:
        result = _stemmer.stemWord(word)
    if len(result) >= 5:
        result = FLEETING_AFTER_VOWEL.sub("йк", FLEETING_AFTER_CONSONANT.sub("к", result))
    return result


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (ё as е); hyphens and punctuation separate words."""
    return WORD.findall(text.lower().replace("ё", "е"))


@dataclass(frozen=True)
class _Keyword:
    level: int
    text: str  # as configured
    stems: tuple[str, ...]
    negative: bool  # starts with a negation itself ("не работает")


class _Matcher:
    """The keywords of one config, with stems computed once."""

    def __init__(self, config: ClassifyConfig) -> None:
        lists = {1: config.op1_keywords, 2: config.op2_keywords, 3: config.op3_keywords}
        self.by_first: dict[str, list[_Keyword]] = {}
        for level, keywords in lists.items():
            for text in keywords:
                tokens = words(text)
                if tokens:
                    keyword = _Keyword(level, text, tuple(map(stem, tokens)), tokens[0] in NEGATIONS)
                    self.by_first.setdefault(keyword.stems[0], []).append(keyword)
        self.stems = frozenset(s for ks in self.by_first.values() for k in ks for s in k.stems)
        self.shorter: dict[str, set[str]] = {}  # a keyword stem cut by 1–2 letters -> the stems
        for s in self.stems:
            for cut in range(1, PREFIX_SLACK + 1):
                if len(s) - cut >= PREFIX_MIN:
                    self.shorter.setdefault(s[:-cut], set()).add(s)

    def keyword_stems(self, token_stem: str) -> tuple[str, ...]:
        """The keyword stems a word's stem stands for: equal, or one a short extension of the other."""
        found = set(self.shorter.get(token_stem, ()))
        for cut in range(0, PREFIX_SLACK + 1):
            prefix = token_stem[:len(token_stem) - cut]
            if (cut == 0 or len(prefix) >= PREFIX_MIN) and prefix in self.stems:
                found.add(prefix)
        return tuple(sorted(found))

    def matches(self, tokens: list[str]) -> Iterable[_Keyword]:
        resolved = [self.keyword_stems(stem(t)) for t in tokens]
        for i, here in enumerate(resolved):
            for first in here:
                for keyword in self.by_first.get(first, ()):
                    if self._matches_at(keyword, resolved, i) and not (
                            i and tokens[i - 1] in NEGATIONS and not keyword.negative):
                        yield keyword

    @staticmethod
    def _matches_at(keyword: _Keyword, resolved: list[tuple[str, ...]], i: int) -> bool:
        end = i + len(keyword.stems)
        return end <= len(resolved) and all(
            s in r for s, r in zip(keyword.stems, resolved[i:end]))


@functools.lru_cache(maxsize=8)
def _matcher(config: ClassifyConfig) -> _Matcher:
    return _Matcher(config)


def classify(text: str, config: ClassifyConfig) -> tuple[int, str]:
    """The level (1–3) of a request with this text, and a reason naming the matched keywords."""
    found: dict[int, list[str]] = {}
    for keyword in _matcher(config).matches(words(text)):
        if keyword.text not in found.setdefault(keyword.level, []):
            found[keyword.level].append(keyword.text)
    if not found:
        return config.default_level, f"no keyword matched, default level {config.default_level}"
    level = max(found)
    reason = f"level {level}: {', '.join(found[level])}"
    lower = [f"level {lvl}: {', '.join(found[lvl])}" for lvl in sorted(found, reverse=True)[1:]]
    return level, reason + (f" (also matched {'; '.join(lower)})" if lower else "")


class LevelClassification(Rule):
    """Propose ОП1, ОП2 or ОП3 for a new request from its subject and new text (:func:`classify`).

    ОП4 is never proposed: it is opened only from an open ОП3 request.
    """

    name = "level-classification"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.action is not Action.NEW_REQUEST:
            return
        verdict.level, verdict.level_reason = classify(mail.problem, context.config.classify)
        verdict.note(self.name, verdict.level_reason)


__all__ = ["LevelClassification", "classify"]
