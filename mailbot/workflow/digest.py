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

import heapq
from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..config import Config
from ..outbox import InvalidRecipient, Outgoing, enqueue
from ..register.models import SlaDigest, Staff
from ..render import render
from ..sla.calendar import WorkingCalendar
from ..sla.deadlines import Deadlines, Running

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
    horizon = calendar.add_working_minutes(now, config.sla.digest_horizon)
    found = Deadlines(session, config.sla, calendar, now).watched(horizon)
    if not found:
        return []
    by_assignee: dict[int | None, list[Running]] = {}  # each by deadline, as found
    for running in found:
        by_assignee.setdefault(running.assignee_id, []).append(running)
    staff = {s.id: s for s in session.scalars(select(Staff))}
    heads = config.sla.supervisor_addresses
    audience: dict[str, tuple[str, set[int | None] | None]] = {}  # address: name, assignees (None: all)
    for boss in staff.values():
        under = _under(boss, staff)
        if boss.active and under:
            audience[boss.email] = (boss.full_name, under | (set() if heads else {None}))
    for address in heads:
        audience[address] = (audience.get(address, ("",))[0], None)
    limit, chosen = config.sla.digest_max_items, {}
    for address, (name, assignees) in audience.items():
        lists = list(by_assignee.values()) if assignees is None else \
            [by_assignee[a] for a in assignees if a in by_assignee]
        if lists:
            mine = list(heapq.merge(*lists, key=lambda r: (r.due, r.request_id, r.clock)))
            chosen[address] = (name, mine, mine[:limit])  # the most overdue first
    items = _Items(session, calendar, now, ZoneInfo(config.timezone),
                   [r for _, _, shown in chosen.values() for r in shown])
    return [_digest(address, name, mine, shown, items, staff)
            for address, (name, mine, shown) in chosen.items()]


class _Items:
    """The lines of the digests: each clock of each request read and made once."""

    def __init__(self, session: Session, calendar: WorkingCalendar, now: datetime, tz: ZoneInfo,
                 shown: list[Running]) -> None:
        rows = {row.id: row for row in session.execute(text("""
            SELECT r.id, r.number, r.subject, r.level,
                   coalesce(nullif(r.requester_name, ''), r.requester_email) AS requester,
                   coalesce(o.name, '') AS organization
            FROM requests r LEFT JOIN organizations o ON o.id = r.organization_id
            WHERE r.id = ANY(:ids)"""), {"ids": sorted({r.request_id for r in shown})})}
        self.now = now
        self._made = {id(running): _item(rows[running.request_id], running, calendar, now, tz)
                      for running in shown}

    def __getitem__(self, running: Running) -> Item:
        return self._made[id(running)]


def _item(row: Any, running: Running, calendar: WorkingCalendar, now: datetime,
          tz: ZoneInfo) -> Item:
    return Item(number=row.number, subject=row.subject, organization=row.organization,
                requester=row.requester, level=row.level, clock=running.clock,
                deadline=running.due.astimezone(tz), overdue=running.due <= now,
                late=calendar.working_minutes_between(running.due, now),
                assignee_id=running.assignee_id)


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


def _digest(address: str, name: str, mine: list[Running], shown: list[Running], items: _Items,
            staff: dict[int, Staff]) -> Digest:
    levels: dict[int | None, dict[int | None, list[Item]]] = {}
    for running in shown:
        item = items[running]
        levels.setdefault(item.level, {}).setdefault(item.assignee_id, []).append(item)

    def person(assignee_id: int | None) -> str:
        member = staff.get(assignee_id)
        return f"{member.full_name} ({member.login})" if member else UNASSIGNED

    grouped = [Level(level, [Person(person(a), levels[level][a])
                             for a in sorted(levels[level], key=lambda a: (a is None, person(a)))])
               for level in sorted(levels, key=lambda level: (level is None, level))]
    overdue = sum(1 for r in mine if r.due <= items.now)
    return Digest(to=address, name=name, levels=grouped, overdue=overdue,
                  soon=len(mine) - overdue, hidden=len(mine) - len(shown))


__all__ = ["Digest", "Item", "build_digests", "digest_slot", "send_digests"]
