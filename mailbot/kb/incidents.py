"""Changing the known-error database: incidents, their statuses and their history.

Every change writes an ``incident_history`` row (who, when, what: ``changes`` maps a field to
its old and new value; the request and the message it came from, when it came by mail). The
CLI (``mailbot kb``), ТП2's commands by mail and ОП4 all change incidents through here.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..parsers.numbers import find_incident_numbers, incident_number
from ..register.crm import decode
from ..register.db import next_ids
from ..register.models import Incident, IncidentHistory, Message, Request, Staff
from .statuses import STATUSES, status_named

FIELDS = ("title", "symptoms", "solution", "product", "version")
IMPORT_CHUNK = 2000  # incidents per INSERT of an import (the vocabulary triggers run once each)


class KbError(ValueError):
    """The change cannot be made as given; the message says why."""


def by_number(session: Session, number: str, prefix: str = "INC") -> Incident | None:
    """The incident numbered ``number`` (``INC-45``, ``[ІNС-000045]`` and the like)."""
    return session.scalar(select(Incident).where(Incident.number == incident_number(number, prefix)))


def next_number(session: Session, prefix: str) -> str:
    """A free number from the sequence: ``INC-000046`` after ``INC-000045``."""
    while True:
        value = session.scalar(text("SELECT nextval('incident_number_seq')"))
        number = f"{prefix}-{value:06d}"
        if session.scalar(select(Incident.id).where(Incident.number == number)) is None:
            return number


def create(session: Session, *, title: str, actor: str, now: datetime, prefix: str = "INC",
           symptoms: str = "", solution: str = "", product: str = "", version: str = "",
           status: str = "new", number: str | None = None, staff: Staff | None = None,
           request: Request | None = None, message: Message | None = None) -> Incident:
    """A new incident, numbered from the sequence unless ``number`` is given.

    Its id is taken at once (no flush: a batch of mail writes it with the rest), so that
    requests can be linked to it in the same step.
    """
    if not title.strip():
        raise KbError("an incident needs a title")
    if status not in STATUSES or status == "duplicate":
        raise KbError(f"a new incident's status is one of {', '.join(STATUSES[:4])}")
    if number is None:
        number = next_number(session, prefix)
    elif by_number(session, number, prefix) is not None:
        raise KbError(f"incident {number} exists already")
    incident = Incident(id=next_ids(session.connection(), {"incidents": 1})["incidents"][0],
                        number=number, title=title.strip(), symptoms=symptoms.strip(),
                        solution=solution.strip(), product=product.strip(),
                        version=version.strip(), status=status,
                        created_by=staff.id if staff else None, created_at=now, updated_at=now)
    session.add(incident)
    _history(session, incident, "created", actor, now, request, message,
             {f: [None, getattr(incident, f)] for f in (*FIELDS, "status") if getattr(incident, f)})
    return incident


def edit(session: Session, incident: Incident, changes: dict[str, str], *, actor: str,
         now: datetime, request: Request | None = None, message: Message | None = None,
         kind: str = "edited") -> dict[str, list]:
    """Change text fields (title, symptoms, solution, product, version); what changed."""
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise KbError(f"no such incident field: {', '.join(sorted(unknown))}")
    if "title" in changes and not changes["title"].strip():
        raise KbError("an incident needs a title")
    changed = {}
    for name, value in changes.items():
        value = value.strip()
        if getattr(incident, name) != value:
            changed[name] = [getattr(incident, name), value]
            setattr(incident, name, value)
    if changed:
        incident.updated_at = now
        _history(session, incident, kind, actor, now, request, message, changed)
    return changed


def set_status(session: Session, incident: Incident, status: str, *, actor: str, now: datetime,
               duplicate_of: Incident | None = None, request: Request | None = None,
               message: Message | None = None) -> bool:
    """Set the status (``duplicate`` needs the original); whether it changed."""
    if status not in STATUSES:
        raise KbError(f"the status is one of {', '.join(STATUSES)}, not {status!r}")
    if status == "duplicate":
        if duplicate_of is None:
            raise KbError("a duplicate needs the number of the original incident")
        if duplicate_of.id == incident.id or duplicate_of.duplicate_of == incident.id:
            raise KbError(f"{incident.number} cannot be a duplicate of {duplicate_of.number}")
    original = duplicate_of.id if status == "duplicate" else None
    if incident.status == status and incident.duplicate_of == original:
        return False
    changes: dict[str, Any] = {"status": [incident.status, status]}
    if original != incident.duplicate_of:
        changes["duplicate_of"] = [_number_of(session, incident.duplicate_of),
                                   duplicate_of.number if duplicate_of else None]
    incident.status, incident.duplicate_of, incident.updated_at = status, original, now
    _history(session, incident, "status", actor, now, request, message, changes)
    return True


def document_solution(session: Session, incident: Incident, solution: str, *, actor: str,
                      now: datetime, request: Request | None = None,
                      message: Message | None = None) -> None:
    """ТП2 documents the solution: stored on the incident, which is now ``solved``."""
    if not solution.strip():
        raise KbError("the solution is empty")
    edit(session, incident, {"solution": solution}, actor=actor, now=now, request=request,
         message=message, kind="solution")
    if incident.status in ("new", "investigating"):
        set_status(session, incident, "solved", actor=actor, now=now, request=request,
                   message=message)


def link(session: Session, incident: Incident, request: Request, *, actor: str, now: datetime,
         message: Message | None = None) -> None:
    """Note in the incident's history that a request is linked to it."""
    _history(session, incident, "linked", actor, now, request, message,
             {"request": [None, request.number]})


def _history(session: Session, incident: Incident, kind: str, actor: str, now: datetime,
             request: Request | None, message: Message | None, changes: dict) -> None:
    session.add(IncidentHistory(incident_id=incident.id, at=now, actor=actor, kind=kind,
                                changes=changes, request=request, message=message))


def _number_of(session: Session, incident_id: int | None) -> str | None:
    return session.scalar(select(Incident.number).where(Incident.id == incident_id)) \
        if incident_id else None


# ---------------------------------------------------------------- import

@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line or item, reason)

    def describe(self) -> str:
        return (f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
                f"{len(self.errors)} rejected")


@dataclass(frozen=True)
class _Row:
    where: int  # line (CSV) or item (JSON), for the error list
    values: dict[str, str]


def import_file(session: Session, path: str | Path, *, actor: str, now: datetime,
                prefix: str = "INC") -> ImportSummary:
    """Import incidents from a CSV or JSON file (docs/workflow.md, "The known-error database").

    A row with a ``number`` that exists updates that incident; others are created (numbered
    from the sequence when they have none). Rows that cannot be imported are listed with the
    reason; the others are kept. New incidents go in with a few statements per thousand.
    """
    data = Path(path).read_bytes()
    rows = list(_json_rows(data) if Path(path).suffix.lower() == ".json" else _csv_rows(data))
    return import_rows(session, rows, actor=actor, now=now, prefix=prefix)


def import_rows(session: Session, rows: Iterable[_Row], *, actor: str, now: datetime,
                prefix: str = "INC") -> ImportSummary:
    summary = ImportSummary()
    new: list[_Row] = []
    duplicates: list[tuple[_Row, str]] = []
    seen: set[str] = set()
    for row in rows:
        problem = _row_problem(row.values, prefix)
        number = _normal_number(row.values.get("number", ""), prefix)
        if problem is None and number and number in seen:
            problem = f"number {number} appears twice in the file"
        if problem:
            summary.errors.append((row.where, problem))
            continue
        seen.add(number)
        existing = by_number(session, number, prefix) if number else None
        if existing is None:
            new.append(row)
        else:
            _update(session, existing, row, actor, now, summary)
        if row.values.get("duplicate_of", "").strip():
            duplicates.append((row, number))
    numbered = _insert(session, new, actor, now, prefix, summary)
    for row, number in duplicates:
        _mark_duplicate(session, row, number or numbered.get(row.where, ""), actor, now, prefix,
                        summary)
    return summary


def _row_problem(values: dict[str, str], prefix: str) -> str | None:
    if not values.get("title", "").strip():
        return "no title"
    status = values.get("status", "").strip()
    if status and status_named(status) is None:
        return f"unknown status {status!r} (one of {', '.join(STATUSES)})"
    if status and status_named(status) == "duplicate" and not values.get("duplicate_of", "").strip():
        return "a duplicate needs duplicate_of (the original's number)"
    number = values.get("number", "").strip()
    if number and not find_incident_numbers(number, prefix):
        return f"not an incident number like {prefix}-000045: {number!r}"
    return None


def _normal_number(number: str, prefix: str) -> str:
    found = find_incident_numbers(number, prefix) if number.strip() else ()
    return found[0] if found else ""


def _update(session: Session, incident: Incident, row: _Row, actor: str, now: datetime,
            summary: ImportSummary) -> None:
    changed = edit(session, incident, {f: row.values[f] for f in FIELDS if f in row.values},
                   actor=actor, now=now, kind="imported")
    status = status_named(row.values.get("status", "")) or incident.status
    if status != "duplicate" and set_status(session, incident, status, actor=actor, now=now):
        changed["status"] = True
    if changed:
        summary.updated += 1
    else:
        summary.unchanged += 1


def _insert(session: Session, rows: list[_Row], actor: str, now: datetime, prefix: str,
            summary: ImportSummary) -> dict[int, str]:
    """New incidents, a chunk per statement (incidents, then their history); numbers from the
    sequence, which first moves past every number the file gives. The number of each row
    inserted, by its line (or item)."""
    numbered: dict[int, str] = {}
    given = [_normal_number(r.values.get("number", ""), prefix) for r in rows]
    _advance_sequence(session, [int(n.rpartition("-")[2]) for n in given if n])
    for start in range(0, len(rows), IMPORT_CHUNK):
        chunk, numbers = rows[start:start + IMPORT_CHUNK], given[start:start + IMPORT_CHUNK]
        missing = sum(1 for n in numbers if not n)
        if missing:
            values = iter(session.scalars(text(
                "SELECT nextval('incident_number_seq') FROM generate_series(1, :n)"), {"n": missing}))
            numbers = [n or f"{prefix}-{next(values):06d}" for n in numbers]
        inserted = dict(session.execute(text("""
            INSERT INTO incidents (number, title, symptoms, solution, product, version, status,
                                   created_at, updated_at)
            SELECT r.*, :now, :now
            FROM unnest(CAST(:numbers AS text[]), CAST(:title AS text[]), CAST(:symptoms AS text[]),
                        CAST(:solution AS text[]), CAST(:product AS text[]),
                        CAST(:version AS text[]), CAST(:statuses AS text[])) AS r
            ON CONFLICT (number) DO NOTHING
            RETURNING number, id"""), {
            "numbers": numbers, "now": now,
            "statuses": [_new_status(r.values.get("status", "")) for r in chunk],
            **{f: [r.values.get(f, "").strip() for r in chunk] for f in FIELDS}}).all())
        session.execute(text("""
            INSERT INTO incident_history (incident_id, at, actor, kind)
            SELECT id, :now, :actor, 'imported' FROM unnest(CAST(:ids AS bigint[])) AS id"""),
            {"ids": list(inserted.values()), "now": now, "actor": actor})
        summary.created += len(inserted)
        for row, number in zip(chunk, numbers):
            if number in inserted:
                numbered[row.where] = number
            else:
                summary.errors.append((row.where, f"number {number} was taken meanwhile"))
    return numbered


def _new_status(name: str) -> str:
    """The status an imported incident starts with (a duplicate is marked once all are in)."""
    status = status_named(name) if name.strip() else "new"
    return "new" if status == "duplicate" else status


def _advance_sequence(session: Session, numbers: list[int]) -> None:
    """The number sequence continues after ``numbers`` and every incident's number."""
    session.execute(text("""
        SELECT setval('incident_number_seq', x.top)
        FROM (SELECT greatest(:given, coalesce(max(substring(number FROM '([0-9]+)$')::bigint), 0))
              AS top FROM incidents) AS x, incident_number_seq AS s
        WHERE x.top > s.last_value - CASE WHEN s.is_called THEN 0 ELSE 1 END"""),
        {"given": max(numbers, default=0)})


def _mark_duplicate(session: Session, row: _Row, number: str, actor: str, now: datetime,
                    prefix: str, summary: ImportSummary) -> None:
    incident = by_number(session, number, prefix) if number else None
    original = by_number(session, row.values["duplicate_of"], prefix)
    if incident is None:
        return
    if original is None:
        summary.errors.append((row.where, f"no incident {row.values['duplicate_of']!r} to be "
                                          "the original"))
        return
    try:
        set_status(session, incident, "duplicate", duplicate_of=original, actor=actor, now=now)
    except KbError as exc:
        summary.errors.append((row.where, str(exc)))


COLUMNS = ("number", "title", "symptoms", "solution", "product", "version", "status",
           "duplicate_of")


def _csv_rows(data: bytes) -> Iterator[_Row]:
    """Rows of a CSV export: a header row naming the columns (any order; ``;`` or ``,``)."""
    content = decode(data)
    first = next((line for line in content.splitlines() if line.strip()), "")
    delimiter = "," if first.count(",") > first.count(";") else ";"
    reader = csv.reader(io.StringIO(content), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader, [])]
    unknown = [h for h in header if h not in COLUMNS]
    if unknown or "title" not in header:
        raise KbError(f"the header row must name the columns ({', '.join(COLUMNS)}; title is "
                      f"required){'; unknown: ' + ', '.join(unknown) if unknown else ''}")
    for cells in reader:
        if any(c.strip() for c in cells):
            yield _Row(reader.line_num, dict(zip(header, cells)))


def _json_rows(data: bytes) -> Iterator[_Row]:
    """Items of a JSON list of objects (or ``{"incidents": [...]}``) with the CSV's keys."""
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KbError(f"not a JSON file: {exc}") from None
    if isinstance(items, dict):
        items = items.get("incidents")
    if not isinstance(items, list):
        raise KbError('expected a list of incidents (or {"incidents": [...]})')
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            yield _Row(n, {})
            continue
        yield _Row(n, {k: "" if v is None else str(v) for k, v in item.items() if k in COLUMNS})
