"""Searching the known-error database: which incidents a text is about, and why.

PostgreSQL reads the text as it reads the incidents (the ``russian`` configuration, error codes
written alike by ``kb_text``): its lexemes (so word forms match: «запускается», «запуска»), and
its query in web-search syntax (all words, "фразы", ``-слово``, ``or``). In a short text, a
lexeme that no incident holds is taken for a typo of the closest one the incidents do hold (the
same first letter, trigram similarity at least :data:`TYPO_SIMILARITY`): «драйвра» → «драйвер».
A long text's other words carry it, and its names and greetings are no typos.

An incident is found, with the reason, when

- it holds an error code of the text (:func:`is_code`: ``0x80070005``, ``ORA-12541``, ``1053``);
- the text is short (at most :data:`SHORT` lexemes: a search, a subject) and the incident holds
  all of its words and phrases, or all but one of three or more;
- or the text covers the incident's problem: at least :data:`TITLE_SHARE` of the lexemes of its
  title (two at least), or :data:`PROBLEM_SHARE` of those of its title and symptoms (three at
  least) are in the text. A long mail is about the incident whose title it mostly repeats; one
  common word («ошибка», «сервер») relates nothing.

Candidates: the incidents the GIN index finds for a short text's query and for the codes; for a
long text (and a short one whose query found too little), also the :data:`POOL` incidents
whose titles hold the most of its informative lexemes, each weighing its inverse document
frequency (``incident_terms.ndoc``; the postings of ``incident_title_words``, rarest lexemes
first, up to :data:`POSTINGS`; a lexeme in more than :data:`COMMON` of the incidents, and in
:data:`COMMON_LEAST` or more, weighs nothing). They are ranked by codes, all words, the weight
of the text's lexemes in their titles, and how much of their title the text covers. A duplicate
is not found (its original is). A batch of texts is searched in two statements (three when a
short one found too little by its query), whatever their number.

The statements run on a psycopg connection, plain SQL: the daemon's, under its session
(:func:`mailbot.register.db.dbapi`), and the command line's, which loads no SQLAlchemy.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import namedtuple_row

SHORT = 8  # lexemes: a text this short is a query (all its words must match)
TITLE_SHARE = 0.6
PROBLEM_SHARE = 0.5
TYPO_SIMILARITY = 0.4
TYPO_MIN_LENGTH = 5  # shorter lexemes are not corrected
COMMON = 0.1  # a lexeme in more incidents than this share does not pick candidates,
COMMON_LEAST = 100  # unless it is in fewer than this many
POSTINGS = 20000  # title postings read per text, at most (one lexeme at least)
POOL = 200  # incidents per text taken from the title postings
MAX_TEXT = 20000  # characters of a text that are read
_CODE = re.compile(r"[0-9a-zа-яё]+")
_YEAR = re.compile(r"(19|20)[0-9]{2}")


@dataclass(frozen=True)
class IncidentMatch:
    number: str
    title: str
    solution: str
    score: float
    reason: str = ""
    status: str = ""


@dataclass
class Analysis:
    """A text as the incidents' words see it."""

    query: str = ""  # the web-search query (tsquery text), typos corrected
    total: int = 0  # incidents in the database
    lexemes: dict[str, int] = field(default_factory=dict)  # lexeme searched → incidents holding it
    typos: dict[str, str] = field(default_factory=dict)  # lexeme as written → corrected

    @property
    def short(self) -> bool:
        return len(self.lexemes) <= SHORT

    @property
    def codes(self) -> list[str]:
        return [lexeme for lexeme, ndoc in self.lexemes.items() if ndoc and is_code(lexeme)]

    @property
    def all_words(self) -> str | None:
        """A short text's own query (all its words and phrases), or None."""
        return self.query if self.short and self.query else None

    def gin_query(self) -> str | None:
        """What the GIN index finds: a short text's own query, and the codes."""
        parts = ([f"( {self.all_words} )"] if self.all_words else []) + \
            [_quoted(code) for code in self.codes]
        return " | ".join(parts) or None

    def weights(self) -> dict[str, float]:
        """The informative lexemes whose title postings are read, and what each weighs."""
        chosen, postings = {}, 0
        for ndoc, lexeme in sorted((n, lexeme) for lexeme, n in self.lexemes.items()
                                   if 0 < n <= max(COMMON * self.total, COMMON_LEAST)):
            if chosen and postings + ndoc > POSTINGS:
                break
            chosen[lexeme] = math.log(self.total / ndoc)
            postings += ndoc
        return chosen


def is_code(lexeme: str) -> bool:
    """An error code: letters and at least three digits (``0x80070005``, ``ora12541``), or
    four digits or more that are not a year (``1053``); a version (``3.2.1``) is none."""
    if not _CODE.fullmatch(lexeme):
        return False
    digits = sum(ch.isdigit() for ch in lexeme)
    if digits == len(lexeme):
        return digits >= 4 and not (digits == 4 and _YEAR.fullmatch(lexeme))
    return digits >= 3


def search(conn: psycopg.Connection, texts: Sequence[str],
           limit: int = 3) -> dict[str, list[IncidentMatch]]:
    """The incidents each text is about, best first, at most ``limit`` each.

    A short text is first searched by its own query (and codes) alone; only when that finds
    fewer than ``limit``, the titles holding most of its words are read too.
    """
    texts = list(dict.fromkeys(texts))
    analyses = analyse(conn, texts)
    found = _matches(conn, {t: (a, not a.short) for t, a in analyses.items()}, limit)
    again = {t: (a, True) for t, a in analyses.items() if a.short and len(found[t]) < limit}
    for text_, more in _matches(conn, again, limit).items():
        known = {m.number for m in found[text_]}
        found[text_] = sorted(found[text_] + [m for m in more if m.number not in known],
                              key=lambda m: (-m.score, m.number))[:limit]
    return {t: found[t] for t in texts}


def _matches(conn: psycopg.Connection, wanted: dict[str, tuple[Analysis, bool]],
             limit: int) -> dict[str, list[IncidentMatch]]:
    """The incidents among each text's candidates that match it (``wanted``: the analysis, and
    whether the titles holding most of its words are candidates too)."""
    found: dict[str, list[IncidentMatch]] = {t: [] for t in wanted}
    asked = [(t, a, pool) for t, (a, pool) in wanted.items()
             if a.lexemes and (a.gin_query() or pool and a.weights())]
    if not asked:
        return found
    rows = _rows(conn, CANDIDATES, {
        "ns": list(range(len(asked))),
        "queries": [a.gin_query() for _, a, _ in asked],
        "alls": [a.all_words for _, a, _ in asked],
        "lexemes": [" ".join(map(_quoted, a.lexemes)) for _, a, _ in asked],
        "codes": [" ".join(map(_quoted, a.codes)) for _, a, _ in asked],
        "weights": [json.dumps(a.weights()) for _, a, _ in asked],
        "pools": [pool for _, _, pool in asked],
        "short": [a.short for _, a, _ in asked],
        "raws": [t[:500] for t, _, _ in asked],
        "pool": POOL, "title_share": TITLE_SHARE, "problem_share": PROBLEM_SHARE,
        "limit": limit})
    for row in rows:
        query, analysis, _ = asked[row.n]
        found[query].append(IncidentMatch(row.number, row.title, row.solution, float(row.score),
                                          _reason(row, analysis), row.status))
    return found


def analyse(conn: psycopg.Connection, texts: Sequence[str]) -> dict[str, Analysis]:
    """Each text's query and lexemes, typos corrected, in one statement."""
    if not texts:
        return {}
    rows = _rows(conn, ANALYSIS, {
        "texts": [t[:MAX_TEXT] for t in texts], "typo": TYPO_SIMILARITY,
        "typo_length": TYPO_MIN_LENGTH, "short": SHORT})
    analyses = {t: Analysis() for t in texts}
    fixes: dict[str, list] = {t: [] for t in texts}
    for row in rows:
        analysis = analyses[texts[row.n - 1]]
        analysis.query, analysis.total = row.query or "", row.total or 0
        if row.lexeme is None:
            continue
        analysis.lexemes.setdefault(row.lexeme, row.ndoc or 0)
        if row.ndoc is None and row.fixed is not None:
            fixes[texts[row.n - 1]].append(row)
    for text_, analysis in analyses.items():
        for row in fixes[text_]:
                analysis.typos[row.lexeme] = row.fixed
                del analysis.lexemes[row.lexeme]
                analysis.lexemes[row.fixed] = row.fixed_ndoc
                analysis.query = analysis.query.replace(_quoted(row.lexeme), _quoted(row.fixed))
    return analyses


def _reason(row, analysis: Analysis) -> str:
    """Why the incident was found, in words for ТП1 and ТП2."""
    parts = []
    if row.codes:
        parts.append(f"код ошибки {', '.join(row.codes)}")
    if row.all_words:
        parts.append("все слова запроса")
    elif analysis.short and row.query_hits >= len(analysis.lexemes) - 1 >= 2:
        parts.append(f"{row.query_hits} из {len(analysis.lexemes)} слов запроса")
    if row.title_hits >= 2 and row.title_hits >= TITLE_SHARE * row.title_len:
        parts.append(f"{row.title_hits} из {row.title_len} слов заголовка")
    elif row.problem_hits >= 3 and row.problem_hits >= PROBLEM_SHARE * row.problem_len:
        parts.append(f"{row.problem_hits} из {row.problem_len} слов заголовка и симптомов")
    words = ", ".join(row.words[:8])
    typos = [f"{typo} → {fixed}" for typo, fixed in analysis.typos.items() if fixed in row.words]
    return "; ".join(parts) + (f" ({words})" if words else "") + \
        (f"; опечатки: {', '.join(typos)}" if typos else "")


def _rows(conn: psycopg.Connection, sql: str, params: dict) -> list:
    with conn.cursor(row_factory=namedtuple_row) as cursor:
        return cursor.execute(sql, params).fetchall()


def _quoted(lexeme: str) -> str:
    """A lexeme as tsquery and tsvector text write it."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


# The lexemes of each text (n counts from 1), its web-search query, and for a lexeme no incident
# holds the closest one that some do (pg_trgm: % finds candidates through the GIN index). No
# incident yet: nothing to find, and the texts are not analysed.
ANALYSIS = """
WITH q AS (
    SELECT n, kb_text(t) AS t FROM unnest(CAST(%(texts)s AS text[])) WITH ORDINALITY AS q(t, n)
    WHERE EXISTS (SELECT FROM incident_terms WHERE lexeme = '' AND ndoc > 0)),
l AS (
    SELECT q.n, w.lexeme, count(*) OVER (PARTITION BY q.n) AS count
    FROM q, unnest(tsvector_to_array(to_tsvector('russian', q.t))) AS w(lexeme))
SELECT q.n, CASE WHEN coalesce(l.count, 0) <= %(short)s
                 THEN websearch_to_tsquery('russian', q.t)::text END AS query, l.lexeme, k.ndoc,
       f.lexeme AS fixed, f.ndoc AS fixed_ndoc, f.sim AS similarity,
       (SELECT ndoc FROM incident_terms WHERE lexeme = '') AS total
FROM q
LEFT JOIN l ON l.n = q.n
LEFT JOIN incident_terms k ON k.lexeme = l.lexeme AND k.ndoc > 0
LEFT JOIN LATERAL (
    SELECT v.lexeme, v.ndoc, similarity(v.lexeme, l.lexeme) AS sim
    FROM incident_terms v
    WHERE k.lexeme IS NULL AND l.count <= %(short)s AND length(l.lexeme) >= %(typo_length)s
      AND l.lexeme !~ '[0-9]'
      AND v.lexeme %% l.lexeme AND v.ndoc > 0 AND left(v.lexeme, 1) = left(l.lexeme, 1)
    ORDER BY sim DESC, v.ndoc DESC, v.lexeme LIMIT 1) AS f ON f.sim >= %(typo)s
ORDER BY q.n, l.lexeme
"""

# For each text: the candidates (its GIN query's, and, when asked, the pool of titles holding
# the most of its weighed lexemes); what its weighed lexemes weigh in their titles; how much of
# their title (A) and of their title and symptoms (A, B) the text covers; its codes they hold;
# whether they hold all of a short text; those that qualify, best first. ts_delete removes the
# text's lexemes from the incident's: what is left tells how many were covered, without unnesting.
CANDIDATES = """
SELECT c.n, m.number, m.title, m.solution, m.status, m.score, m.all_words, m.query_hits,
       m.title_hits, m.title_len, m.problem_hits, m.problem_len,
       ARRAY(SELECT unnest(tsvector_to_array(m.search)) INTERSECT
             SELECT unnest(k.lexemes) ORDER BY 1) AS words,
       ARRAY(SELECT unnest(tsvector_to_array(m.search)) INTERSECT
             SELECT unnest(k.codes) ORDER BY 1) AS codes
FROM unnest(CAST(%(ns)s AS int[]), CAST(%(queries)s AS tsquery[]),
            CAST(%(alls)s AS tsquery[]), CAST(%(lexemes)s AS tsvector[]),
            CAST(%(codes)s AS tsvector[]), CAST(%(weights)s AS jsonb[]),
            CAST(%(short)s AS boolean[]), CAST(%(raws)s AS text[]), CAST(%(pools)s AS boolean[]))
     AS c(n, query, all_words, lexemes, codes, weights, short, raw, pool)
CROSS JOIN LATERAL (
    SELECT tsvector_to_array(c.lexemes) AS lexemes, tsvector_to_array(c.codes) AS codes,
           length(c.lexemes) AS lexeme_count,
           (SELECT coalesce(sum(value::float8), 0) FROM jsonb_each_text(c.weights)) AS weight,
           ARRAY(SELECT t.incident_id
                 FROM (SELECT key, value::float8 AS weight FROM jsonb_each_text(c.weights)) AS w,
                      LATERAL (SELECT incident_id FROM incident_title_words
                               WHERE lexeme = w.key AND c.pool OFFSET 0) AS t  -- an index scan each
                 GROUP BY t.incident_id ORDER BY sum(w.weight) DESC, t.incident_id
                 LIMIT %(pool)s) AS pool) AS k
CROSS JOIN LATERAL (
    SELECT s.*, (CASE WHEN s.code_hits > 0 THEN 2 ELSE 0 END
                 + CASE WHEN s.all_words THEN 1 ELSE 0 END
                 + 2 * coalesce(s.mass / nullif(k.weight, 0), 0)
                 + s.title_hits::float8 / greatest(s.title_len, 1)
                 + 0.5 * s.problem_hits::float8 / greatest(s.problem_len, 1)
                 + CASE WHEN c.short THEN 0.5 * s.title_hits::float8 / greatest(k.lexeme_count, 1)
                                          + 0.5 * s.query_hits::float8 / greatest(k.lexeme_count, 1)
                                          + coalesce(ts_rank_cd(s.a, c.all_words), 0)
                                          + 0.3 * similarity(s.title, c.raw)
                        ELSE 0 END) AS score
    FROM (
        SELECT i.id, i.number, i.title, i.solution, i.status, i.search, a,
               (SELECT sum((c.weights ->> l)::float8) FROM unnest(tsvector_to_array(a)) AS l) AS mass,
               length(a) AS title_len, length(a) - length(ts_delete(a, k.lexemes)) AS title_hits,
               length(ab) AS problem_len, length(ab) - length(ts_delete(ab, k.lexemes)) AS problem_hits,
               length(i.search) - length(ts_delete(i.search, k.lexemes)) AS query_hits,
               length(i.search) - length(ts_delete(i.search, k.codes)) AS code_hits,
               coalesce(i.search @@ c.all_words, false) AS all_words
        FROM incidents i,
             LATERAL ts_filter(i.search, '{a}') AS a,
             LATERAL ts_filter(i.search, '{a,b}') AS ab
        WHERE (i.search @@ c.query OR i.id = ANY(k.pool)) AND i.status <> 'duplicate') AS s
    WHERE s.code_hits > 0 OR s.all_words
       OR (c.short AND s.query_hits >= k.lexeme_count - 1 AND s.query_hits >= 2
           AND k.lexeme_count >= 3)
       OR (s.title_hits >= 2 AND s.title_hits >= %(title_share)s * s.title_len)
       OR (s.problem_hits >= 3 AND s.problem_hits >= %(problem_share)s * s.problem_len)
    ORDER BY score DESC, s.number LIMIT %(limit)s) AS m
ORDER BY c.n, m.score DESC, m.number
"""
