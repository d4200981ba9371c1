"""Who handles a request (regulation §6).

ОП1 and ОП2: staff of the project-support department with at least three
years with the system. ОП3 and ОП4: staff of the same department with at least
five years (programmers are involved by them, not assigned). Only active ТП1
staff are assigned; inside the eligible group the least-loaded member gets the
request (ties: the one who got a request longest ago), or strict round-robin.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config import StaffConfig
from ..models import Request, Staff
from ..status import Status

DONE = (Status.CLOSED.value, Status.REJECTED.value)


def is_eligible(staff: Staff, level: int | None, config: StaffConfig) -> bool:
    """May ``staff`` handle a request of ОП``level``?"""
    if not staff.active:
        return False
    years = config.min_years_op34 if (level or 1) >= 3 else config.min_years_op12
    return (staff.experience_years >= years
            and staff.department.strip().lower() == config.project_support_department.strip().lower())


def choose_assignee(session: Session, staff: list[Staff], level: int | None,
                    config: StaffConfig) -> Staff | None:
    """The eligible ТП1 member of ``staff`` who should get the next request of this level."""
    candidates = [s for s in staff if s.tier == "tp1" and is_eligible(s, level, config)]
    if not candidates:
        return None
    rows = session.execute(
        select(Request.assignee_id,
               func.count().filter(Request.status.not_in(DONE)), func.max(Request.id))
        .where(Request.assignee_id.in_([s.id for s in candidates]))
        .group_by(Request.assignee_id)).all()
    load = {assignee: open_count for assignee, open_count, _ in rows}
    last = {assignee: newest for assignee, _, newest in rows}
    if config.assignment == "round_robin":
        return min(candidates, key=lambda s: (last.get(s.id, 0), s.id))
    return min(candidates, key=lambda s: (load.get(s.id, 0), last.get(s.id, 0), s.id))
