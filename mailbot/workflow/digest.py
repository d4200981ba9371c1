"""Supervisors' digests: what is overdue or due soon, by level and assignee (docs/workflow.md).

At each of ``sla.digest_times`` on a working day of the ``[sla]`` calendar (every
day for ``24x7``), every supervisor (an active staff member someone reports to)
gets the items of the people under them, directly or through others, and each
of ``sla.supervisor_addresses`` gets them all. Unassigned items go to those
addresses, or to every supervisor when there are none. An item is a running SLA
clock that is overdue or due within ``sla.digest_horizon`` working minutes; a
digest lists at most ``sla.digest_max_items`` of them, the most overdue first,
and counts the rest. An empty digest is not sent.

The slot's ``sla_digests`` row is inserted ON CONFLICT DO NOTHING in the
transaction that writes the digests: whoever inserts it sends them, once, however
many daemons run and restart. A slot missed while no daemon ran goes out when
one is back the same day (the latest slot only).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..config import Config
from ..deadlines import Deadlines, Running
from ..models import SlaDigest, Staff
from ..outbox import InvalidRecipient, Outgoing, enqueue
from ..render import render
from ..sla import WorkingCalendar

UNASSIGNED = "не назначен (группа ТП1)"


@dataclass(frozen=True)
class Item:
    """One line of a digest: a request whose clock is overdue or due soon."""

    number: str
    subject: str
    organization: str
    requester: str
    level: int | None
    clock: str
    deadline: datetime  # in the service's time zone
    overdue: bool  # the deadline has passed
    late: int  # working minutes past the deadline; negative: still left
    assignee_id: int | None


@dataclass(frozen=True)
class Person:
    name: str
    items: list[Item]


@dataclass(frozen=True)
class Level:
    level: int | None
    people: list[Person]


@dataclass(frozen=True)
class Digest:
    """One recipient's digest."""

    to: str
    name: str
    levels: list[Level]
    overdue: int
    soon: int
    hidden: int  # items beyond sla.digest_max_items

    @property
    def shown(self) -> int:
        return sum(len(p.items) for level in self.levels for p in level.people)


def digest_slot(config: Config, calendar: WorkingCalendar, now: datetime) -> datetime | None:
    """The latest digest time of today that has come (UTC), or None (none yet, or a day off)."""
    tz = ZoneInfo(config.timezone)
    today = now.astimezone(tz).date()
    if not calendar.is_working_day(today):
        return None
    slots = [datetime.combine(today, time.fromisoformat(t), tz) for t in config.sla.digest_times]
    passed = [slot for slot in slots if slot <= now]
    return passed[-1].astimezone(timezone.utc) if passed else None


def send_digests(session: Session, config: Config, calendar: WorkingCalendar, now: datetime,
                 slot: datetime) -> int | None:
    """The digests of ``slot`` into the outbox; how many, or None when the slot was taken care of."""
    claimed = session.scalar(insert(SlaDigest).values(slot=slot, sent_at=now, mails=0)
                             .on_conflict_do_nothing(index_elements=["slot"])
                             .returning(SlaDigest.slot))
    if claimed is None:
        return None
    digests = build_digests(session, config, calendar, now)
    local = slot.astimezone(ZoneInfo(config.timezone))
    sent = 0
    for digest in digests:
        content = render("sla_digest", digest=digest, slot=local, support=config.support,
                         horizon=config.sla.digest_horizon)
        try:
            enqueue(session, config, Outgoing(kind="sla_digest", to=(digest.to,), content=content,
                                              reply_to=config.support.address), now)
        except InvalidRecipient:  # addresses are checked where they are entered: a stale row
            continue
        sent += 1
    session.get(SlaDigest, slot).mails = sent
    return sent


def build_digests(session: Session, config: Config, calendar: WorkingCalendar,
                  now: datetime) -> list[Digest]:
    """Every recipient's digest at ``now`` (those with nothing in them left out)."""
    items = collect_items(session, config, calendar, now)
    if not items:
        return []
    staff = {s.id: s for s in session.scalars(select(Staff))}
    heads = config.sla.supervisor_addresses
    audience: dict[str, tuple[str, set[int | None] | None]] = {}  # address: name, assignees (None: all)
    for boss in staff.values():
        under = _under(boss, staff)
        if boss.active and under:
            audience[boss.email] = (boss.full_name, under | (set() if heads else {None}))
    for address in heads:
        audience[address] = (audience.get(address, ("",))[0], None)
    digests = []
    for address, (name, assignees) in audience.items():
        mine = [i for i in items if assignees is None or i.assignee_id in assignees]
        if mine:
            digests.append(_digest(address, name, mine, staff, config.sla.digest_max_items))
    return digests


def collect_items(session: Session, config: Config, calendar: WorkingCalendar,
                  now: datetime) -> list[Item]:
    """Every running clock that is overdue or due within the digest's horizon, by deadline."""
    horizon = calendar.add_working_minutes(now, config.sla.digest_horizon)
    running = Deadlines(session, config.sla, calendar, now).watched(horizon)
    if not running:
        return []
    rows = {row.id: row for row in session.execute(text("""
        SELECT r.id, r.number, r.subject, r.level, r.assignee_id, r.requester_name,
               r.requester_email, coalesce(o.name, '') AS organization
        FROM requests r LEFT JOIN organizations o ON o.id = r.organization_id
        WHERE r.id = ANY(:ids)"""), {"ids": sorted({r.request_id for r in running})})}
    tz = ZoneInfo(config.timezone)
    return [_item(rows[r.request_id], r, calendar, now, tz) for r in running]


def _item(row, running: Running, calendar: WorkingCalendar, now: datetime, tz: ZoneInfo) -> Item:
    return Item(number=row.number, subject=row.subject, organization=row.organization,
                requester=row.requester_name or row.requester_email, level=row.level,
                clock=running.clock, deadline=running.due.astimezone(tz),
                overdue=running.due <= now, late=calendar.working_minutes_between(running.due, now),
                assignee_id=row.assignee_id)


def _under(boss: Staff, staff: dict[int, Staff]) -> set[int | None]:
    """The ids of everyone who reports to ``boss``, directly or through others."""
    found: set[int | None] = set()
    frontier = [boss.id]
    while frontier:
        ids = set(frontier)
        frontier = [s.id for s in staff.values()
                    if s.supervisor_id in ids and s.id not in found and s.id != boss.id]
        found.update(frontier)
    return found


def _digest(address: str, name: str, items: list[Item], staff: dict[int, Staff],
            limit: int) -> Digest:
    shown = sorted(items, key=lambda i: (i.deadline, i.number))[:limit]
    levels: dict[int | None, dict[int | None, list[Item]]] = {}
    for item in shown:
        levels.setdefault(item.level, {}).setdefault(item.assignee_id, []).append(item)

    def person(assignee_id: int | None) -> str:
        member = staff.get(assignee_id)
        return f"{member.full_name} ({member.login})" if member else UNASSIGNED

    grouped = [Level(level, [Person(person(a), levels[level][a])
                             for a in sorted(levels[level], key=lambda a: (a is None, person(a)))])
               for level in sorted(levels, key=lambda level: (level is None, level))]
    return Digest(to=address, name=name, levels=grouped,
                  overdue=sum(1 for i in items if i.overdue),
                  soon=sum(1 for i in items if not i.overdue), hidden=len(items) - len(shown))


__all__ = ["Digest", "Item", "build_digests", "collect_items", "digest_slot", "send_digests"]
