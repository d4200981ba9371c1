"""Public request numbers: ``ТП-2026-000123`` (prefix, year, a per-year sequence)."""
from __future__ import annotations

from ..register.lookup import Lookup


def next_request_number(lookup: Lookup, prefix: str, year: int) -> str:
    """Allocate the next number of ``year``; gap-free per committed transaction.

    The year's counter row stays locked until the transaction ends (concurrent
    daemons wait for it); it is counted up in memory and written with the batch.
    """
    counter = lookup.request_counter(year)
    counter.last += 1
    return format_request_number(prefix, year, counter.last)


def format_request_number(prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year:04d}-{seq:06d}"
