"""Which assistance level (ОП1, ОП2, ОП3) a new request needs: what the customer asks support to do.

The regulation's levels, read as the customer's intent:

- ОП3: something does not work as it should: a failure, an error, abnormal behaviour or an
  outage, including its symptoms (restarts, hangs, lost or empty data, red or grey objects,
  polling stopped, "crash").
- ОП2: a file or a document to send or to receive (software, patches, drivers, manuals,
  licence files, information letters; logs and screenshots sent on request; a delivery
  problem with what was sent: "ссылка не открывается", "письмо не пришло").
- ОП1: a question on normal operation, installation, set-up or a typical procedure
  (привязка, перепривязка, линковка, rights, reports, …).

How (weighted cues, :func:`assess`; every list and weight is ``[classify]`` in the config,
defaults and the cue syntax in :mod:`mailbot.level_cues`): the text is cut into the subject
and sentences; the closing formula ("С уважением", "Спасибо") with what follows it, and
quoted lines, are dropped. Each cue found in a sentence adds its weight to its level, times
the place's weight (the subject ``subject_weight``, the first two sentences ``lead_weight``,
sentences after the sixth ``tail_weight``). Besides single cues a sentence counts as

- a request to send (ОП2, ``intent_weight``, once per mail): a request verb with something
  to send in the sentence or the one before ("пришлите … драйвер"; "Есть ли сборка? Если
  есть, пришлите"), or a need word with it in the sentence ("нужен драйвер", not "нужно ли",
  not "нужно настроить"); a polite question around it does not count for ОП1;
- a delivery problem (ОП2, ``intent_weight``, once per mail): "не открывается", "повреждён"
  next to "письмо", "вложение", "ссылка"; "не получили" with anything sent; the failure
  cues of that sentence do not count;
- the customer sending something (ОП2, ``give_weight``, half without a thing named);
- a how-to question (ОП1, ``howto_weight``): "как" + a verb, "где" + a verb, "какие …" + a
  verb, not "как исправить" (``repair_verbs``);
- a question (ОП1, ``question_weight``): ends with "?", names no failure (a hypothetical one
  does not count), is no "почему …?";
- a symptom (ОП3, ``symptom_weight``): "не" + a verb in the present or the past that no
  failure cue covers and that is no ``not_symptoms`` verb ("цифры не меняются", "почему не
  строятся", not "не знаем", "не нашли", "не зависает").

An ОП1 cue inside a failure cue ("знаки вопроса"), or right after a ``circumstance_words`` word
in a sentence naming a failure ("после установки … перезапускается"), does not count; after a
sentence of the text naming a failure, ОП1 cues weigh ``after_failure_factor`` (a question
after a failure report is about that failure).

Failure cues do not count after a negation ("без ошибок") or before "нет" ("ошибок нет"),
inside ``not_failures`` ("по ошибке", "ошибка в документации", "сбой питания"), and weigh
``hypothetical_factor`` after a hypothetical marker in the sentence ("чтобы при отказе",
"если упадёт", after a how-to question). What follows a document's name in the subject, or in
a sentence asking for it, is its topic and counts for neither ОП1 nor ОП3 ("пришлите
инструкцию по перепривязке").

Decisions (docs/workflow.md has them with the measurements):

- Only the subject and the first 20,000 characters of the text are read (``MAX_TEXT``).
- The best score wins; ОП3 weighs ``op3_bias`` times, and ``failure_over_file`` times more
  against ОП2: a failure plus a request for a patch or a distribution is ОП3 (the failure is
  what must be solved, and a missed failure is the costly error).
- Material does not set the level: a screenshot or a log mentioned weighs 0.5.
- No cue, or none reaching ``weak_score``: ``default_level`` (ОП3), unsure: failure reports
  have the most varied wording; ТП1 confirms.
- Unsure (:attr:`Assessment.unsure`): besides, a best score below ``min_score`` or a runner-up
  within ``min_margin`` of it. In doubt between ОП1 and ОП3 (with any evidence of a failure),
  ОП3 is proposed (``doubt_to_failure``): a missed failure is the costly error. The workflow
  then asks ТП1 to confirm the level (``#уровень``), counts the deadline from the shortest
  norm of the candidates and promises the customer the longest.
- ОП4 is never assigned at intake: the regulation opens it only from an open ОП3 request.
"""
from __future__ import annotations

import functools
import itertools
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import snowballstemmer

from ..config import ClassifyConfig
from ..level_cues import parse_cue, words
from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Action, Verdict

LEVELS = (1, 2, 3)
NEGATIONS = frozenset({"не", "нет", "без", "ни", "никаких", "никакой", "никакого", "нету",
                       "no", "without"})
NEGATED_AFTER = frozenset({"нет", "нету"})  # "ошибок нет"
NOT_SEEN = frozenset({"было", "выявлено", "обнаружено", "возникало", "возникает",
                      "наблюдается", "замечено", "замечали", "появлялось"})  # "сбоев не было"
INFINITIVE = re.compile(r"(ть|ти|чь)(ся|сь)?$")
# a verb in the present or the past ("меняются", "видим", "обновлялись"): after "не", a symptom
FINITE = re.compile(r"([еиуюая]т|[еи]м|[аеиоуыя]л[аои]?)(ся|сь)?$")
ADVERB = re.compile(r"^[а-я]{4,}о$")  # "временно", "быстро": between "как" and its verb
SYMPTOM_NEGATIONS = frozenset({"не", "ни", "not", "t", "never"})  # "ни": a common typo; "doesn t"
LATIN = re.compile(r"^[a-z]{3,}$")  # an English word after "not": its form tells nothing
VERB_LIKE = re.compile(r"((ть|ти|чь|ет|ит|ют|ут|ат|ят)(ся|сь)?|[аеио]н[аоы]?)$")  # задаётся, описана
WHICH = frozenset({"какой", "какая", "какое", "какие", "каких", "какую", "каким", "каком",
                   "сколько", "which"})  # + an infinitive: "какие порты открыть"
INTERROGATIVES = WHICH | {"что", "зачем", "почему", "когда", "what"}
INDEFINITE = frozenset({"то", "либо", "нибудь"})  # "какая-то ошибка" asks nothing
WHY = frozenset({"почему", "отчего", "why"})  # "почему тренды пустые?" asks about a fault
HOWTO_FILLERS = frozenset({"мне", "нам", "правильно", "лучше", "можно", "бы", "же", "теперь",
                           "именно", "быстро", "корректно", "его", "ее", "их", "это", "им",
                           "вообще", "сейчас", "потом"})
GREETING = frozenset({"добрый", "доброе", "день", "вечер", "утро", "здравствуйте", "привет",
                      "коллеги", "уважаемые", "уважаемая", "уважаемый", "техническая",
                      "поддержка", "служба", "специалисты", "hello", "hi", "dear", "team",
                      "support", "всем", "здравствуй"})
CLOSING = re.compile(
    r"^\s*(?:с уважением|с наилучшими пожеланиями|всего (?:доброго|хорошего)|best regards|"
    r"kind regards|regards|заранее (?:спасибо|благодар)|спасибо\W*$|thanks?\W*$|--\s*$)",
    re.IGNORECASE)
MAX_TEXT = 20_000  # characters of the subject and of the text that are read
WORD_CACHE = 50_000  # words whose starting patterns are remembered, per config
SENTENCE_BREAK = re.compile(r"(?<=[.!?…;])\s+|\n\s*\n|\n(?=\s*(?:[-–—•*]|\d{1,2}[.)])\s)")

_stemmer = snowballstemmer.stemmer("russian")
_stemmer_lock = threading.Lock()  # a Snowball stemmer object is not thread-safe
FLEETING_AFTER_CONSONANT = re.compile(r"(?<=[^аеиоуыэюяй])[ое]к$")  # ошибок → ошибк
FLEETING_AFTER_VOWEL = re.compile(r"(?<=[аеиоуыэюя])ек$")  # настроек → настройк


@functools.lru_cache(maxsize=100_000)
def stem(word: str) -> str:
    """The canonical stem of one lower-case word (a fleeting vowel in -ок/-ек dropped)."""
    with _stemmer_lock:
        result = _stemmer.stemWord(word)
    if len(result) >= 5:
        result = FLEETING_AFTER_VOWEL.sub("йк", FLEETING_AFTER_CONSONANT.sub("к", result))
    return result


# ---------------------------------------------------------------- matching words


@dataclass(frozen=True)
class _Token:
    word: str
    stem: str


@dataclass(frozen=True)
class _Place:
    """The alternatives at one word place of a cue."""

    stems: frozenset[str]
    words: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, token: _Token) -> bool:
        return (token.stem in self.stems or token.word in self.words
                or token.word.startswith(self.prefixes))


@dataclass(frozen=True)
class _Pattern:
    group: str  # the ``[classify]`` key it comes from ("op3_cues", "request_verbs", …)
    text: str  # as configured
    places: tuple[_Place, ...]
    weight: float
    alone: bool


ANY_WORD = _Place(frozenset(), frozenset(), ("",))


def _compile(group: str, text: str) -> list[_Pattern]:
    """The patterns of one cue: one, or one per gap length when it has ``~``."""
    syntax = parse_cue(text)
    places: list[tuple[tuple[_Place, ...], ...]] = []  # per place: its choices of places
    for alternatives in syntax.places:
        if alternatives[0][0] == "gap":
            places.append(((), (ANY_WORD,), (ANY_WORD, ANY_WORD)))
            continue
        stems, exact, prefixes = set(), set(), []
        for kind, word in alternatives:
            if kind == "prefix":
                prefixes.append(word)
            elif kind == "word" or len(word) <= 3:
                exact.add(word)
            else:
                stems.add(stem(word))
        places.append(((_Place(frozenset(stems), frozenset(exact), tuple(prefixes)),),))
    return [_Pattern(group, text, tuple(p for part in choice for p in part), syntax.weight,
                     syntax.alone) for choice in itertools.product(*places)]


Match = tuple[_Pattern, int, int]  # a pattern and the words it covers: tokens[start:end]
GROUPS = ("op1_cues", "op2_cues", "op3_cues", "request_verbs", "need_words", "give_verbs",
          "transfer_objects", "delivery_problems", "delivery_nouns", "arrival_problems",
          "document_nouns", "not_failures", "hypothetical_markers", "repair_verbs",
          "not_symptoms", "circumstance_words")


class _Lexicon:
    """Every ``[classify]`` pattern of one config, indexed by its first word place, so that a
    sentence is scanned once for all of them."""

    def __init__(self, config: ClassifyConfig) -> None:
        self.by_stem: dict[str, list[_Pattern]] = {}
        self.by_word: dict[str, list[_Pattern]] = {}
        self.by_prefix: dict[str, list[_Pattern]] = {}
        for group in GROUPS:
            for pattern in (p for text in getattr(config, group) for p in _compile(group, text)):
                first = pattern.places[0]
                for key in first.stems:
                    self.by_stem.setdefault(key, []).append(pattern)
                for key in first.words:
                    self.by_word.setdefault(key, []).append(pattern)
                for key in first.prefixes:
                    self.by_prefix.setdefault(key, []).append(pattern)
        self.longest_prefix = max(map(len, self.by_prefix), default=0)
        self._starting: dict[str, tuple[_Pattern, ...]] = {}
        self._fitting: dict[tuple[str, str], tuple[_Pattern, ...]] = {}

    def starting(self, token: _Token) -> tuple[_Pattern, ...]:
        """The patterns whose first place this word fits (remembered: words recur)."""
        found = self._starting.get(token.word)
        if found is None:
            candidates = [*self.by_stem.get(token.stem, ()), *self.by_word.get(token.word, ())]
            for k in range(1, min(len(token.word), self.longest_prefix) + 1):
                candidates.extend(self.by_prefix.get(token.word[:k], ()))
            found = tuple(p for p in candidates if p.places[0].matches(token))
            if len(self._starting) >= WORD_CACHE:
                self._starting.clear()
            self._starting[token.word] = found
        return found

    def fitting(self, token: _Token, following: _Token | None) -> tuple[_Pattern, ...]:
        """The patterns whose first two places these two words fit (one-place patterns: the
        first word), remembered per pair of words."""
        key = (token.word, following.word if following else "")
        found = self._fitting.get(key)
        if found is None:
            found = tuple(p for p in self.starting(token) if len(p.places) == 1 or (
                following is not None and p.places[1].matches(following)))
            if len(self._fitting) >= WORD_CACHE:
                self._fitting.clear()
            self._fitting[key] = found
        return found

    def find(self, tokens: Sequence[_Token]) -> dict[str, list[Match]]:
        """Per group, the matches in ``tokens``: the best-weighted one per group and start word."""
        found: dict[str, list[Match]] = {group: [] for group in GROUPS}
        count = len(tokens)
        for i, token in enumerate(tokens):
            if not self.starting(token):
                continue
            best: dict[str, Match] = {}
            for pattern in self.fitting(token, tokens[i + 1] if i + 1 < count else None):
                end = i + len(pattern.places)
                if end <= count and all(place.matches(t) for place, t in
                                        zip(pattern.places[2:], tokens[i + 2:end])):
                    if pattern.group not in best or pattern.weight > best[pattern.group][0].weight:
                        best[pattern.group] = (pattern, i, end)
            for group, match in best.items():
                found[group].append(match)
        return found


@functools.lru_cache(maxsize=8)
def _lexicon(config: ClassifyConfig) -> _Lexicon:
    return _Lexicon(config)


# ---------------------------------------------------------------- the text


@functools.lru_cache(maxsize=100_000)
def _token(word: str) -> _Token:
    return _Token(word, stem(word))


def _tokens(text: str) -> list[_Token]:
    return [_token(w) for w in words(text)]


def _body_lines(body: str) -> Iterator[str]:
    """The lines of the text, up to a closing formula; quoted lines left out."""
    seen_text = False
    for line in body.splitlines():
        if seen_text and CLOSING.match(line):
            return
        if not line.lstrip().startswith(">"):
            seen_text = seen_text or bool(line.strip())
            yield line


def _sentences(problem: str, config: ClassifyConfig) -> Iterator[tuple[str, float, list[_Token]]]:
    """(text, place weight, words) of the subject and of each sentence of the text (its first
    ``MAX_TEXT`` characters: the request is stated at the start, and a pasted log or a
    hostile megabyte would only cost time)."""
    subject, _, body = problem.partition("\n")
    subject, body = subject[:MAX_TEXT], body[:MAX_TEXT]
    if tokens := _tokens(subject):
        yield subject, config.subject_weight, tokens
    counted = 0
    for piece in SENTENCE_BREAK.split("\n".join(_body_lines(body))):
        tokens = _tokens(piece)
        if not tokens or all(t.word in GREETING for t in tokens):
            continue
        counted += 1
        yield piece, (config.lead_weight if counted <= 2 else 1.0 if counted <= 6
                      else config.tail_weight), tokens


# ---------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Cue:
    """A cue found in the mail: its level, the mail's own words, what it added to the score."""

    level: int
    words: str
    score: float
    intent: str = ""  # "send", "give", "delivery": of each, the strongest cue counts, once


@dataclass(frozen=True)
class Assessment:
    """The proposed level, how sure, and why."""

    level: int
    unsure: bool
    candidates: tuple[int, ...]  # the levels in doubt, best first (only ``level`` when sure)
    scores: tuple[float, float, float]  # ОП1, ОП2, ОП3
    cues: tuple[Cue, ...]  # strongest first

    def cues_of(self, level: int) -> list[str]:
        """The mail's words that spoke for ``level``, strongest first, each once (and not
        again when part of a phrase already listed: "пришлите … патч", then not "патч")."""
        listed: list[str] = []
        for cue in self.cues:
            if cue.level == level and not any(
                    cue.words in words.replace(" … ", " ").split(" ") or cue.words == words
                    for words in listed):
                listed.append(cue.words)
        return listed

    def details(self) -> dict:
        """For the audit trail (the "created" event), and :meth:`from_details`."""
        return {"level": self.level, "unsure": self.unsure, "candidates": list(self.candidates),
                "scores": list(self.scores),
                "cues": [[c.level, c.words, c.score, c.intent] for c in self.cues]}

    @classmethod
    def from_details(cls, details: dict) -> Assessment:
        return cls(details["level"], details["unsure"], tuple(details["candidates"]),
                   tuple(details["scores"]), tuple(Cue(*cue) for cue in details["cues"]))

    @property
    def reason(self) -> str:
        """One line for the audit trail: level, scores, cues, doubt."""
        scores = " / ".join(f"ОП{lvl} {s:g}" for lvl, s in zip(LEVELS, self.scores))
        found = "; ".join(f"ОП{lvl}: {', '.join(self.cues_of(lvl))}"
                          for lvl in (3, 2, 1) if self.cues_of(lvl)) or "no cue"
        doubt = (f"; unsure: {' or '.join(f'ОП{c}' for c in self.candidates)}"
                 if self.unsure else "")
        return f"ОП{self.level} ({scores}) by {found}{doubt}"


def _howto(tokens: Sequence[_Token], found: dict[str, list[Match]]) -> int | None:
    """Where a how-to question ("как настроить", "где задаются") starts in the sentence."""
    repairs = {start for _, start, _ in found["repair_verbs"]}
    requests = {start for _, start, _ in found["request_verbs"]}
    for i, token in enumerate(tokens):
        if token.word == "где":  # "где задаются уставки", "где в меню описана …"; not "где скачать"
            for j in range(i + 1, min(i + 4, len(tokens))):
                if j in requests:
                    break
                if VERB_LIKE.search(tokens[j].word) and tokens[j].word not in HOWTO_FILLERS:
                    return i
        elif (token.word in WHICH and i < 4
              and not (i + 1 < len(tokens) and tokens[i + 1].word in INDEFINITE)):
            if any(INFINITIVE.search(t.word) or VERB_LIKE.search(t.word)
                   for t in tokens[i + 1:i + 9]):
                return i  # "какие порты открыть", "в каком меню меняется"
        elif token.word in ("как", "how"):
            for j in range(i + 1, min(i + 4, len(tokens))):
                if tokens[j].word in HOWTO_FILLERS or ADVERB.search(tokens[j].word):
                    continue  # "как правильно настроить", "как временно исключить"
                if j not in repairs and (INFINITIVE.search(tokens[j].word) or token.word == "how"):
                    return i
                break
    return None


def _negated(tokens: Sequence[_Token], start: int, end: int) -> bool:
    """A failure cue right after a negation or right before "нет" / "не было"."""
    starts_negative = tokens[start].word in NEGATIONS
    before = start and tokens[start - 1].word in NEGATIONS and not starts_negative
    after = end < len(tokens) and (
        tokens[end].word in NEGATED_AFTER
        or (tokens[end].word == "не" and end + 1 < len(tokens)
            and tokens[end + 1].word in NOT_SEEN))
    return bool(before or after)


def _near(spans: Sequence[tuple[int, int]], start: int, end: int, window: int) -> bool:
    return any(s - window <= end - 1 and start <= e - 1 + window for s, e in spans)


def _words(tokens: Sequence[_Token], start: int, end: int) -> str:
    return " ".join(t.word for t in tokens[start:end])


@dataclass
class _Sentence:
    """One sentence (or the subject) being read: its words, its place's weight, its cues."""

    text: str
    tokens: list[_Token]
    place: float
    subject: bool
    lexicon: _Lexicon
    config: ClassifyConfig

    def __post_init__(self) -> None:
        self.found = self.lexicon.find(self.tokens)
        self.objects = self._spans("transfer_objects")
        self.requests = self._spans("request_verbs")
        self.needs = [] if self.tokens[0].word in INTERROGATIVES else [  # "какая лицензия нужна"
            (s, e) for s, e in self._spans("need_words") if not self._asks_or_acts(e)]
        self.cues: list[Cue] = []
        self.reports_failure = False  # names a failure, not a hypothetical one

    def _asks_or_acts(self, end: int) -> bool:
        """"нужно ли …" asks, "нужно настроить …" is about doing, not about a thing to send."""
        following = self.tokens[end].word if end < len(self.tokens) else ""
        return following == "ли" or bool(INFINITIVE.search(following))

    def _spans(self, group: str) -> list[tuple[int, int]]:
        return [(start, end) for _, start, end in self.found[group]]

    def read(self, object_before: str | None) -> bool:
        """Find the cues; ``object_before``: something to send named in the sentence before.
        True when this sentence asks to send something."""
        tokens, config = self.tokens, self.config
        sends = self._intent_to_send(object_before)
        howto = _howto(tokens, self.found)
        hypothetical = [s for s, _ in self._spans("hypothetical_markers")]
        if howto is not None and not sends:
            hypothetical.append(howto)
            self.add(1, _words(tokens, howto, howto + 2), config.howto_weight)
        hypothetical_from = min(hypothetical, default=len(tokens))
        topic_from = self._document_topic_from()
        excluded = self._spans("not_failures")
        failures: list[tuple[int, int]] = []  # the spans of the failure cues that count
        for level in (3, 2, 1):
            for pattern, start, end in self.found[f"op{level}_cues"]:
                weight = pattern.weight
                if level != 2 and start >= topic_from:
                    continue  # the topic of a document asked for
                if level == 1 and (sends or self._part_of_a_failure(failures, start, end)):
                    continue  # a polite request; "знаки вопроса", "после установки … падает"
                if level == 3:
                    if _negated(tokens, start, end) or _near(excluded, start, end, 0):
                        continue
                    if start > hypothetical_from:
                        weight *= config.hypothetical_factor
                    failures.append((start, end))
                self.add(level, _words(tokens, start, end), weight)
            if level == 3:
                failures += self._symptoms(topic_from, hypothetical_from)
                self.reports_failure = any(start <= hypothetical_from for start, _ in failures)
        if (self.text.rstrip().endswith("?") and not sends
                and not any(start <= hypothetical_from for start, _ in failures)
                and not any(t.word in WHY for t in tokens)):
            self.add(1, "?", config.question_weight)  # a question, not about a failure
        self._intent_to_give()
        self._delivery_problem()
        return sends

    def _symptoms(self, topic_from: int, hypothetical_from: int) -> list[tuple[int, int]]:
        """"не" + a verb in the present or the past that no failure cue covers and that is no
        ``not_symptoms`` verb ("цифры не меняются", "почему не строятся"): what the system does
        not do. Adds them (hypothetical ones weigh less) and returns their spans."""
        tokens, config = self.tokens, self.config
        negations = [i for i, t in enumerate(tokens[:min(len(tokens) - 1, topic_from)])
                     if t.word in SYMPTOM_NEGATIONS]
        if not negations:
            return []
        covered = {i for _, start, end in self.found["op3_cues"] for i in range(start, end)}
        covered |= {start for _, start, _ in self.found["not_symptoms"]}
        found = []
        for i in negations:
            token, verb = tokens[i], tokens[i + 1].word
            asks = i + 2 < len(tokens) and tokens[i + 2].word == "ли"  # "не сломается ли"
            if (not covered & {i, i + 1} and not asks
                    and (LATIN.match(verb) or len(verb) >= 4 and FINITE.search(verb)
                         and not INFINITIVE.search(verb))):
                weight = config.symptom_weight * (
                    config.hypothetical_factor if i > hypothetical_from else 1)
                self.add(3, f"{token.word} {verb}", weight)
                found.append((i, i + 2))
        return found

    def _part_of_a_failure(self, failures: Sequence[tuple[int, int]], start: int,
                           end: int) -> bool:
        """An ОП1 cue inside a failure cue ("знаки вопроса", "это нормально"), or, in a sentence
        naming a failure, right after a circumstance word ("после установки", "при переносе")."""
        if not failures:
            return False
        if any(s <= start and end <= e for s, e in failures):
            return True
        return any(e == start for _, _, e in self.found["circumstance_words"])

    def add(self, level: int, words: str, weight: float, intent: str = "") -> None:
        self.cues.append(Cue(level, words, round(weight * self.place, 2), intent))

    def first_object(self) -> str | None:
        return _words(self.tokens, *self.objects[0]) if self.objects else None

    def _intent_to_send(self, object_before: str | None) -> bool:
        if self.objects and (self.requests or self.needs):
            request = _words(self.tokens, *(self.requests or self.needs)[0])
            thing = self.first_object()
        elif self.requests and object_before:
            request, thing = _words(self.tokens, *self.requests[0]), object_before
        else:
            return False
        self.add(2, f"{request} … {thing}", self.config.intent_weight, "send")
        return True

    def _intent_to_give(self) -> None:
        """The customer sends something: weak evidence alone, more with a thing named."""
        if gives := self._spans("give_verbs"):
            verb = _words(self.tokens, *gives[0])
            if self.objects:
                self.add(2, f"{verb} … {self.first_object()}", self.config.give_weight, "give")
            else:
                self.add(2, verb, self.config.give_weight / 2, "give")

    def _document_topic_from(self) -> int:
        """Where the topic of a document asked for (or named in the subject) starts."""
        if not (self.subject or self.requests or self.needs):
            return len(self.tokens)
        documents = [e for _, e in self._spans("document_nouns")]
        return min(documents, default=len(self.tokens))

    def _delivery_problem(self) -> None:
        """A problem with what support sent: an ОП2 request to send it again."""
        nouns = self._spans("delivery_nouns")
        problems = [(p, s, e) for p, s, e in self.found["delivery_problems"]
                    if p.alone or _near(nouns, s, e, self.config.delivery_window)]
        if self.objects or nouns:
            problems += self.found["arrival_problems"]
        if problems:  # the sentence is about the delivery: its failure words are too
            _, start, end = problems[0]
            self.cues = [c for c in self.cues if c.level != 3]
            self.add(2, _words(self.tokens, start, end), self.config.intent_weight, "delivery")


def _once_per_intent(cues: list[Cue]) -> list[Cue]:
    """Every cue, but of each intent only the strongest: a request repeated is one request."""
    best: dict[str, Cue] = {}
    for cue in cues:
        if cue.intent and (cue.intent not in best or cue.score > best[cue.intent].score):
            best[cue.intent] = cue
    return [c for c in cues if not c.intent or best[c.intent] is c]


@functools.lru_cache(maxsize=1024)  # a batch's known-error search asked first, the rule then
def assess(problem: str, config: ClassifyConfig) -> Assessment:
    """The level of a request whose subject is the first line of ``problem`` and whose new
    text is the rest (``ParsedMail.problem``)."""
    lexicon = _lexicon(config)
    cues: list[Cue] = []
    before: _Sentence | None = None
    failure_seen = False
    subject = not problem.startswith("\n")
    for index, (text, place, tokens) in enumerate(_sentences(problem, config)):
        sentence = _Sentence(text, tokens, place, subject and index == 0, lexicon, config)
        if sentence.read(before.first_object() if before else None) and before and before.objects:
            before.cues = [c for c in before.cues if c.level != 1]  # "Есть ли X? Пришлите"
        cues.extend(before.cues if before else ())
        if failure_seen:  # a question after a failure report is about that failure
            sentence.cues = [replace(c, score=round(c.score * config.after_failure_factor, 2))
                             if c.level == 1 else c for c in sentence.cues]
        failure_seen = failure_seen or (sentence.reports_failure and not sentence.subject)
        before = sentence
    cues.extend(before.cues if before else ())
    cues = _once_per_intent(cues)
    scores = {level: round(sum(c.score for c in cues if c.level == level), 2)
              for level in LEVELS}
    weighed = {**scores, 3: scores[3] * config.op3_bias}
    if weighed[2] > weighed[1]:  # a failure and a file: the failure weighs more (mixed intent)
        weighed[3] *= config.failure_over_file
    ranked = sorted(LEVELS, key=lambda level: (weighed[level], level), reverse=True)
    best, second = ranked[0], ranked[1]
    ordered = tuple(sorted(cues, key=lambda c: -c.score))
    found = (scores[1], scores[2], scores[3])
    if weighed[best] < config.weak_score:  # nothing, or too little to choose by
        default = config.default_level
        others = [level for level in ranked if level != default and weighed[level]] or [
            level for level in sorted(LEVELS, reverse=True) if level != default]
        return Assessment(default, True, (default, *others), found, ordered)
    unsure = (weighed[best] < config.min_score
              or weighed[second] > weighed[best] * (1 - config.min_margin))
    candidates = (best, second) if unsure else (best,)  # ties go to the higher level
    if unsure and config.doubt_to_failure and candidates == (1, 3) and weighed[3]:
        candidates = (3, 1)  # a question or a failure: the failure first (a miss costs more)
    return Assessment(candidates[0], unsure, candidates, found, ordered)


class LevelClassification(Rule):
    """Propose ОП1, ОП2 or ОП3 for a new request from its subject and new text (:func:`assess`).

    ОП4 is never proposed: it is opened only from an open ОП3 request.
    """

    name = "level-classification"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.action is not Action.NEW_REQUEST:
            return
        assessment = assess(mail.problem, context.config.classify)
        verdict.level, verdict.level_reason = assessment.level, assessment.reason
        verdict.level_assessment = assessment
        verdict.note(self.name, verdict.level_reason)


__all__ = ["Assessment", "Cue", "LevelClassification", "assess"]
