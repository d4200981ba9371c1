"""Who handles a request (regulation §6).

ОП1 and ОП2: staff of the project-support department with at least three
years with the system. ОП3 and ОП4: staff of the same department with at least
five years (programmers are involved by them, not assigned). Only active ТП1
staff are assigned; inside the eligible group the least-loaded member gets the
request (ties: the one who got a request longest ago), or strict round-robin.
"""
from __future__ import annotations

from ..config import StaffConfig
from ..register.lookup import Lookup
from ..register.models import Staff


def is_eligible(staff: Staff, level: int | None, config: StaffConfig) -> bool:
    """May ``staff`` handle a request of ОП``level``?"""
    if not staff.active:
        return False
    years = config.min_years_op34 if (level or 1) >= 3 else config.min_years_op12
    return (staff.experience_years >= years
            and staff.department.strip().lower() == config.project_support_department.strip().lower())


def choose_assignee(lookup: Lookup, level: int | None, config: StaffConfig) -> Staff | None:
    """The eligible ТП1 member who should get the next request of this level."""
    candidates = [s for s in lookup.staff() if s.tier == "tp1" and is_eligible(s, level, config)]
    if not candidates:
        return None
    work = lookup.workloads([s.id for s in candidates])
    if config.assignment == "round_robin":
        return min(candidates, key=lambda s: (work[s.id].latest, s.id))
    return min(candidates, key=lambda s: (work[s.id].open, work[s.id].latest, s.id))
