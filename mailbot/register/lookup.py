"""Read-only questions the rules and the workflow ask of the register.

A lookup serves one batch of mail in one transaction. The questions every mail
asks (who is the sender, which request is this, how many automatic answers went
to this address, how loaded is each staff member) read the database *without*
flushing and add what the batch has created since the last flush
(:class:`~mailbot.register.pending.Unflushed`): the batch is written in one flush, and
the answers are the same as if each message had been flushed on its own.
:meth:`Lookup.prepare` reads the answers for a whole batch in a few queries;
what it did not foresee is read when asked. Rarer questions (staff commands)
simply let the session flush first.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..kb.search import IncidentMatch, search
from ..outbox import Queue
from ..parsers import ParsedMail
from ..parsers.reply import comparable_lines
from ..workflow.states import Journal
from .crm import DatabaseDirectory
from .db import dbapi
from .models import (
    REGISTERED_SOURCES,
    AttachmentRow,
    Contact,
    Event,
    Incident,
    Message,
    Outbox,
    Request,
    RequestCounter,
    Staff,
    UndeliverableAddress,
)
from .pending import Unflushed
from .status import Status

AUTOMATIC_KINDS = ("ack", "ask_contact_info", "no_contract")
AUTOMATIC_WINDOW = timedelta(hours=1)  # the acknowledgement rate limit counts per hour
ALERT_WINDOW = timedelta(hours=1)  # at most one alert to staff per subject in this window
DONE = (Status.CLOSED.value, Status.REJECTED.value)


@dataclass(frozen=True)
class IdentityDoubt:
    """A requester known only from what the mail says of itself (see :meth:`Lookup.identity_doubt`)."""
    address: str
    namesakes: tuple[str, ...]  # registered contacts of the organisation with the name given
    phones: tuple[str, ...]  # how to call the organisation to check


def _person(name: str) -> str:
    """A full name for comparison: case, ё/е and spacing ignored."""
    return " ".join(name.lower().replace("ё", "е").split())


def _number(request: Request) -> tuple[str]:
    return (request.number,)


def _message_id(message: Message) -> tuple[str | None]:
    return (message.message_id,)


def _answered(message: Message) -> tuple[str | None, ...]:
    return (message.in_reply_to,) if message.direction == "in" else ()


def _automatic_recipients(row: Outbox) -> list[str]:
    return [r.lower() for r in row.recipients] if row.kind in AUTOMATIC_KINDS else []


@dataclass(frozen=True)
class Workload:
    """A staff member's open requests, and how recently they got one (comparable, higher = later)."""

    open: int
    latest: tuple[int, int]


class Lookup:
    """Queries over one session; every method is a read. ``directory`` is the CRM."""

    def __init__(self, session: Session, tz: str = "Europe/Moscow") -> None:
        self.session = session
        self.unflushed = Unflushed(session)
        self.directory = DatabaseDirectory(session, tz, self.unflushed)
        self._staff: list[Staff] | None = None
        self._matches: dict[tuple[str, int], list[IncidentMatch]] = {}
        self._queued_unregistered: tuple[list | None, int, list[datetime]] = (None, 0, [])

    def close(self) -> None:
        self.unflushed.close()

    def prepare(self, mails: Sequence[ParsedMail], now: datetime, problems: Sequence[str] = ()) -> None:
        """Read what these mails will ask, a query per question instead of one per mail
        (``problems``: the texts the known-error search will be asked for)."""
        senders = sorted({m.author for m in mails if m.author})
        self.directory.prepare(senders, now)
        self._read_threads([mid for m in mails for mid in m.thread_ids])
        self._read_answers([mid for m in mails for mid in (m.message_id, *m.thread_ids) if mid])
        self._read_numbers([number for m in mails for number in m.request_numbers])
        self._read_automatic(senders, now - AUTOMATIC_WINDOW)
        self._read_undeliverable(senders)
        self._search(problems)

    # ------------------------------------------------------------ staff

    def staff(self) -> list[Staff]:
        """Every staff member, read once per lookup (one batch of mail)."""
        if self._staff is None:
            self._staff = list(self.session.scalars(select(Staff).order_by(Staff.id)))
        return self._staff

    def staff_by_email(self, address: str) -> Staff | None:
        address = address.lower()
        return next((s for s in self.staff() if s.email == address), None)

    def staff_by_login_or_email(self, name: str) -> Staff | None:
        name = name.strip().lower()
        return next((s for s in self.staff() if s.login.lower() == name or s.email == name), None)

    def workloads(self, staff_ids: list[int]) -> dict[int, Workload]:
        """Open requests and the latest assignment of each of these staff members.

        Requests this batch assigned count too; a status changed in this batch
        counts from the next batch on.
        """
        stored = self.unflushed.cached("workloads", self._read_workloads)
        open_count = {sid: stored.get(sid, (0, 0))[0] for sid in staff_ids}
        latest = {sid: (0, stored.get(sid, (0, 0))[1]) for sid in staff_ids}
        for position, request in enumerate(self.unflushed.added(Request)):
            if request.assignee_id in open_count:
                open_count[request.assignee_id] += request.status not in DONE
                latest[request.assignee_id] = (1, position)
        return {sid: Workload(open_count[sid], latest[sid]) for sid in staff_ids}

    def _read_workloads(self) -> dict[int, tuple[int, int]]:
        done = ", ".join(f"'{status}'" for status in DONE)  # literal: the partial index matches
        with self.session.no_autoflush:
            rows = self.session.execute(text(f"""
                SELECT s.id,
                       (SELECT count(*) FROM requests r
                        WHERE r.assignee_id = s.id AND r.status NOT IN ({done})) AS open,
                       (SELECT max(r.id) FROM requests r WHERE r.assignee_id = s.id) AS latest
                FROM unnest(CAST(:ids AS bigint[])) AS s(id)"""),
                {"ids": [s.id for s in self.staff()]}).all()
        return {row.id: (row.open, row.latest or 0) for row in rows}

    # ------------------------------------------------------------ requests

    def request_by_number(self, number: str) -> Request | None:
        new = self.unflushed.by(Request, _number).get(number)
        if new:
            return new[0]
        key = ("number", number)
        if not self.unflushed.has(key):
            self._read_numbers([number])
        return self.unflushed.get(key)

    def _read_numbers(self, numbers: list[str]) -> None:
        wanted = {n for n in numbers if not self.unflushed.has(("number", n))}
        if not wanted:
            return
        with self.session.no_autoflush:
            found = {r.number: r for r in self.session.scalars(
                select(Request).where(Request.number.in_(wanted)))}
        for number in wanted:
            self.unflushed.put(("number", number), found.get(number))

    def request_by_message_ids(self, message_ids: tuple[str, ...]) -> Request | None:
        """The request of the nearest message in the thread that we know."""
        if not message_ids:
            return None
        new = self.unflushed.by(Message, _message_id)
        queue = Queue.of(self.session)
        self._read_threads(message_ids)
        for mid in message_ids:
            known = [m.request for m in new.get(mid, ()) if m.request is not None]
            if known:
                return known[-1]
            queued = queue.request_of(mid) if queue is not None else None
            if queued is not None:
                return queued
            request = self.unflushed.get(("thread", mid))
            if request is not None:
                return request
        return None

    def _read_threads(self, message_ids: Sequence[str]) -> None:
        """Which request each of these Message-IDs belongs to (None: none we know)."""
        wanted = {mid for mid in message_ids if not self.unflushed.has(("thread", mid))}
        if not wanted:
            return
        with self.session.no_autoflush:
            rows = self.session.execute(
                select(Message.message_id, Request).join(Request, Message.request_id == Request.id)
                .where(Message.message_id.in_(wanted)).order_by(Message.id)).all()
        found = {mid: request for mid, request in rows}
        for mid in wanted:
            self.unflushed.put(("thread", mid), found.get(mid))

    def request_answering(self, message_id: str | None) -> Request | None:
        """The request of the first mail we have that answers ``message_id`` (In-Reply-To):
        mail processed after its answer, which came in live while it waited in a backlog."""
        if not message_id:
            return None
        new = [m.request for m in self.unflushed.by(Message, _answered).get(message_id, ())
               if m.request is not None]
        if new:
            return new[0]
        self._read_answers([message_id])
        return self.unflushed.get(("answer", message_id))

    def _read_answers(self, message_ids: Sequence[str]) -> None:
        wanted = {mid for mid in message_ids if not self.unflushed.has(("answer", mid))}
        if not wanted:
            return
        with self.session.no_autoflush:
            rows = self.session.execute(
                select(Message.in_reply_to, Request).join(Request, Message.request_id == Request.id)
                .where(Message.direction == "in", Message.in_reply_to.in_(wanted))
                .order_by(Message.id)).all()
        found: dict[str, Request] = {}
        for mid, request in rows:
            found.setdefault(mid, request)
        for mid in wanted:
            self.unflushed.put(("answer", mid), found.get(mid))

    def request_by_id(self, request_id: int) -> Request | None:
        with self.session.no_autoflush:
            return self.session.get(Request, request_id)

    # ------------------------------------------------------------ ОП4 (rarer questions: they flush)

    def op4_of(self, request: Request, closed_too: bool = False) -> Request | None:
        """The ОП4 request under way for ``request`` (itself when it is one); with
        ``closed_too``, else the latest closed one."""
        if request.level == 4:
            return request
        children = [r for r in self.unflushed.added(Request) if r.parent_id == request.id]
        children = list(dict.fromkeys(children + list(self.session.scalars(select(Request).where(
            Request.parent_id == request.id, Request.level == 4).order_by(Request.id.desc())))))
        open_ = [r for r in children if r.status not in DONE]
        return next(iter(open_ or (children if closed_too else [])), None)

    def request_files(self, request: Request) -> list[AttachmentRow]:
        """The files the customer (and anyone else) sent to ``request``, oldest first: the ДДИ
        collected on it."""
        return list(self.session.scalars(
            select(AttachmentRow).join(Message, AttachmentRow.message_id == Message.id)
            .where(Message.request_id == request.id, Message.direction == "in",
                   AttachmentRow.inline.is_(False)).order_by(AttachmentRow.id)))

    def requests_by_incident(self, numbers: Sequence[str]) -> list[Request]:
        """The requests linked to these incidents, newest first."""
        if not numbers:
            return []
        return list(self.session.scalars(
            select(Request).join(Incident, Request.incident_id == Incident.id)
            .where(Incident.number.in_(list(numbers))).order_by(Request.id.desc())))

    def tp2_staff(self) -> list[Staff]:
        """The active ТП2 members: ОП4 escalations go to them."""
        return [s for s in self.staff() if s.tier == "tp2" and s.active]

    def staff_mail_in_thread(self, request: Request, message_ids: Sequence[str]) -> bool:
        """Does one of ``message_ids`` name mail the bot sent to staff about ``request`` (a
        notification a staff member answers)? Asked of staff mail only."""
        if not message_ids or request.id is None:
            return False
        with self.session.no_autoflush:
            return self.session.scalar(
                select(Message.id).where(Message.request_id == request.id, Message.direction == "out",
                                         Message.kind.startswith("staff_"),
                                         Message.message_id.in_(list(message_ids))).limit(1)) is not None

    def internal_lines(self, request: Request) -> set[str]:
        """The lines (:func:`comparable_lines`) of our mail about ``request`` that only staff got
        (the card, CRM phones, the level's reasons, help, ТП1's notes), less every line that
        customers wrote or were sent (their own words quoted back in a notification) and that
        ТП2 wrote (its solution is ТП1's to relay, regulation §5). Its ОП4 requests' mail counts
        as its own."""
        related = select(Request.id).where((Request.id == request.id) | (Request.parent_id == request.id))
        rows = self.session.execute(
            select(Message.direction, Message.sender, Message.recipients, Message.body)
            .where(Message.request_id.in_(related))).all()
        tp1 = {row.email for row in self.staff() if row.tier != "tp2"}
        internal, public = set(), set()
        for direction, sender, recipients, body in rows:
            if direction == "out" and request.requester_email not in recipients:
                internal |= comparable_lines(body)
            elif direction == "out" or sender not in tp1:
                public |= comparable_lines(body)
        return internal - public

    def request_counter(self, year: int) -> RequestCounter:
        """The year's counter of request numbers, locked until the transaction ends.

        Counted up in memory and written with the batch; after a rollback it is
        locked and read again.
        """
        return self.unflushed.cached(("counter", year), lambda: self._lock_counter(year))

    def _lock_counter(self, year: int) -> RequestCounter:
        locked = select(RequestCounter).where(RequestCounter.year == year).with_for_update()
        with self.session.no_autoflush:
            counter = self.session.scalar(locked)
            if counter is None:
                self.session.execute(insert(RequestCounter).values(year=year, last=0)
                                     .on_conflict_do_nothing(index_elements=["year"]))
                counter = self.session.scalar(locked)
        return counter

    # ------------------------------------------------------------ known errors

    def incident_by_number(self, number: str) -> Incident | None:
        return self.session.scalar(select(Incident).where(Incident.number == number))

    def search_incidents(self, query: str, limit: int = 3) -> list[IncidentMatch]:
        """Known errors ``query`` is about, best first, with the reason (:mod:`mailbot.kb.search`)."""
        if (query, limit) not in self._matches:
            self._search([query], limit)
        return self._matches[query, limit]

    def _search(self, queries: Sequence[str], limit: int = 3) -> None:
        """Search the known errors for several texts at once (a fixed number of statements;
        incidents change by staff commands and the CLI, never unflushed in a batch's reads)."""
        wanted = [q for q in queries if (q, limit) not in self._matches]
        if not wanted:
            return
        found = search(dbapi(self.session), wanted, limit)
        for query in wanted:
            self._matches[query, limit] = found[query]

    # ------------------------------------------------------------ mail hygiene

    def automatic_replies_last_hour(self, address: str, now: datetime) -> int:
        """How many automatic mails (acks and the like) went to ``address`` in the hour before ``now``."""
        address, since = address.lower(), now - AUTOMATIC_WINDOW
        read = self.unflushed.get(("automatic", address))
        if read is None or read[0] > since:
            self._read_automatic([address], since)
            read = self.unflushed.get(("automatic", address))
        stored = sum(1 for at in read[1] if at >= since)
        new = sum(1 for row in self.unflushed.by(Outbox, _automatic_recipients).get(address, ())
                  if row.created_at >= since)
        queue = Queue.of(self.session)
        queued = sum(1 for q in queue.to(address) if q.mail.kind in AUTOMATIC_KINDS
                     and q.at >= since) if queue is not None else 0
        return stored + new + queued

    def _read_automatic(self, addresses: Sequence[str], since: datetime) -> None:
        """When automatic mail went to each address since ``since``."""
        if not addresses:
            return
        addresses = [a.lower() for a in addresses]
        with self.session.no_autoflush:
            rows = self.session.execute(text("""
                SELECT r.recipient, o.created_at
                FROM outbox o, unnest(o.recipients) AS r(recipient)
                WHERE o.kind = ANY(:kinds) AND o.created_at >= :since
                  AND o.recipients && CAST(:addresses AS text[])"""),
                {"kinds": list(AUTOMATIC_KINDS), "since": since, "addresses": addresses}).all()
        sent: dict[str, list[datetime]] = {a: [] for a in addresses}
        for address, at in rows:
            if address in sent:
                sent[address].append(at)
        for address, times in sent.items():
            self.unflushed.put(("automatic", address), (since, times))

    def forged_at_creation(self, request_id: int) -> str:
        """Why our receiving server found the From: of the mail that opened the request forged
        ('' when it did not; the ``created`` event keeps it)."""
        return self.session.scalar(
            select(Event.details["forged_from"].as_string())
            .where(Event.request_id == request_id, Event.kind == "created")) or ""

    def undeliverable(self, address: str) -> UndeliverableAddress | None:
        """The mark of an address our mail cannot reach (refused or bounced for good), if any."""
        address = address.strip().lower()
        if not address:
            return None
        if not self.unflushed.has(("undeliverable", address)):
            self._read_undeliverable([address])
        return self.unflushed.get(("undeliverable", address))

    def _read_undeliverable(self, addresses: Sequence[str]) -> None:
        wanted = {a.strip().lower() for a in addresses} - {""}
        wanted = {a for a in wanted if not self.unflushed.has(("undeliverable", a))}
        if not wanted:
            return
        with self.session.no_autoflush:
            found = {row.address: row for row in self.session.scalars(
                select(UndeliverableAddress).where(UndeliverableAddress.address.in_(wanted)))}
        for address in wanted:
            self.unflushed.put(("undeliverable", address), found.get(address))

    def phones(self, request: Request) -> list[str]:
        """How else to reach a request's customer: the requester's phone in the CRM, else those
        of the organisation's contacts (at most three), each with whose it is."""
        own = self.directory.contact_row(request.requester_email) if request.requester_email else None
        if own is not None and own.phone:
            return [f"{own.phone} ({own.full_name or own.email})"]
        if request.organization_id is None:
            return []
        with self.session.no_autoflush:
            rows = self.session.scalars(
                select(Contact).where(Contact.organization_id == request.organization_id,
                                      Contact.phone.is_not(None), Contact.phone != "")
                .order_by(Contact.id).limit(3)).all()
        return [f"{row.phone} ({row.full_name or row.email})" for row in rows]

    def identity_doubt(self, request: Request) -> IdentityDoubt | None:
        """Why staff should check who wrote: the organisation and ФИО come from the mail's own
        text (the address is no registered contact, its domain not the organisation's), and
        which registered contacts of the organisation bear the name given, at other addresses."""
        email = request.requester_email
        if not email or request.organization_id is None:
            return None
        own = self.directory.contact_row(email)
        organization = self.directory.get_organization(request.organization_id)
        domain = email.rpartition("@")[2].lower()
        if (own is not None and own.registered) or organization is None or any(
                domain == known or domain.endswith(f".{known}") for known in organization.domains):
            return None
        namesakes: list[str] = []
        if request.requester_name:
            with self.session.no_autoflush:
                rows = self.session.scalars(
                    select(Contact).where(Contact.organization_id == organization.id,
                                          Contact.source.in_(REGISTERED_SOURCES),
                                          Contact.email != email)).all()
            wanted = _person(request.requester_name)
            namesakes = [row.email for row in rows if row.full_name and _person(row.full_name) == wanted]
        return IdentityDoubt(email, tuple(namesakes), tuple(self.phones(request)))

    def automatic_to_unregistered_last_hour(self, now: datetime) -> int:
        """How many automatic mails went, in the hour before ``now``, to addresses that are not
        registered contacts (all such addresses together: the backscatter cap)."""
        since = now - AUTOMATIC_WINDOW
        read = self.unflushed.get("automatic-unregistered")
        if read is None or read[0] > since:
            read = (since, self._read_automatic_unregistered(since))
            self.unflushed.put("automatic-unregistered", read)
        stored = sum(1 for at in read[1] if at >= since)
        new = sum(1 for row in self.unflushed.added(Outbox)
                  if row.kind in AUTOMATIC_KINDS and row.created_at >= since
                  and not self._to_registered(row.recipients))
        return stored + new + self._queued_to_unregistered(since)

    def _queued_to_unregistered(self, since: datetime) -> int:
        """The batch's queued automatic mail to unregistered addresses, counted on from where the
        last call stopped (the queue's list only grows; written or discarded, it is a new list)."""
        queue = Queue.of(self.session)
        if queue is None:
            return 0
        mails, seen, times = self._queued_unregistered
        if mails is not queue.mails:
            mails, seen, times = queue.mails, 0, []
        times += [q.at for q in mails[seen:] if q.mail.kind in AUTOMATIC_KINDS
                  and not self._to_registered(q.mail.to)]
        self._queued_unregistered = (mails, len(mails), times)
        return sum(1 for at in times if at >= since)

    def _to_registered(self, recipients: Sequence[str]) -> bool:
        return any((row := self.directory.contact_row(r)) is not None and row.registered
                   for r in recipients)

    def _read_automatic_unregistered(self, since: datetime) -> list[datetime]:
        with self.session.no_autoflush:
            return list(self.session.scalars(text("""
                SELECT o.created_at FROM outbox o
                WHERE o.kind = ANY(:kinds) AND o.created_at >= :since
                  AND NOT EXISTS (SELECT 1 FROM contacts c
                                  WHERE c.email = ANY(o.recipients) AND c.source = ANY(:registered))"""),
                {"kinds": list(AUTOMATIC_KINDS), "since": since, "registered": list(REGISTERED_SOURCES)}))

    def alerted_within_hour(self, about: str, now: datetime) -> bool:
        """Did staff get an alert about ``about`` (a sender, the auto-reply cap) in the hour
        before ``now``? Counts this batch's alerts, not yet written, too."""
        since = now - ALERT_WINDOW
        journal = Journal.of(self.session)
        pending = [(e["at"], e["details"].get("about")) for e in (journal.events if journal else ())
                   if e["kind"] == "alert"]
        pending += [(e.at, e.details.get("about")) for e in self.unflushed.added(Event) if e.kind == "alert"]
        if any(at >= since and subject == about for at, subject in pending):
            return True
        latest = self.unflushed.cached(("alert", about), lambda: self._latest_alert(about))
        return latest is not None and latest >= since

    def _latest_alert(self, about: str) -> datetime | None:
        with self.session.no_autoflush:
            return self.session.scalar(text(
                "SELECT max(at) FROM events WHERE kind = 'alert' AND details ->> 'about' = :about"),
                {"about": about})
