"""Public request numbers: ``ТП-2026-000123`` (prefix, year, a per-year sequence)."""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def next_request_number(session: Session, prefix: str, year: int) -> str:
    """Allocate the next number of ``year``; gap-free per committed transaction."""
    seq = session.execute(text(
        "INSERT INTO request_counters (year, last) VALUES (:year, 1) "
        "ON CONFLICT (year) DO UPDATE SET last = request_counters.last + 1 RETURNING last"),
        {"year": year}).scalar_one()
    return format_request_number(prefix, year, seq)


def format_request_number(prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year:04d}-{seq:06d}"
