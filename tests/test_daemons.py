"""Several `mailbot run` daemons on one database and one mailbox (issue 20): real processes of
the CLI, Dovecot, PostgreSQL and the SMTP sink.

Three daemons take a stream of new requests and replies while one of them is killed with
SIGKILL every few seconds and started again. What the support team would check: every mail
put into the mailbox is stored once and processed once (0 lost), every new request is one
request and every reply joins its original's request, even when another daemon processes it
(0 duplicate requests, numbers without gaps), at most one mail goes out twice per kill (the
one on the wire), and the folder is watched again within seconds of its watcher's death.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.message import EmailMessage

import psycopg
import pytest
from sqlalchemy import select

from mailbot import scheduler as scheduler_module
from mailbot.daemon import Daemon
from mailbot.leases import CLOCK, LEASE_SPACE, Leases, lease_key
from mailbot.register.models import Inbound, Message, Outbox, Request
from mailbot.scheduler import clock_jobs, make_scheduler
from mailbot.supervision import DatabaseHealth
from mailbot.transport.claims import claim_inbound
from mailbot.transport.store import RawMail, dedup_key, store, thread_keys
from tests.mailflow import Desk
from tests.test_faults import Mailbot, count, folder, wait_until

pytestmark = pytest.mark.daemons

DAEMONS = 3
REQUESTS = 80  # new requests in the stream, each followed by a reply to it
INTERVAL = 0.3  # seconds between a reply and the next request put into the mailbox
REPLY_AFTER = 0.1  # seconds between a request and its reply
KILL_EVERY = 6.0  # seconds
TAKEOVER = 10.0  # seconds: a dead watcher's folder is watched again within this (≈1 s measured)


@pytest.fixture
def site(database_url, dovecot, mailbox, smtp_sink) -> Iterator[Desk]:
    desk = Desk(database_url, dovecot, mailbox, smtp_sink)
    desk.load_crm()
    yield desk
    desk.sessions.kw["bind"].dispose()


@pytest.fixture
def start_daemon(site, tmp_path) -> Iterator[Callable[[], Mailbot]]:
    """Starts a `mailbot run` process (the same config, a log of its own); any still running
    at the end is killed."""
    started: list[Mailbot] = []

    def start() -> Mailbot:
        directory = tmp_path / f"daemon-{len(started)}"
        directory.mkdir()
        started.append(Mailbot(site, directory).start())
        return started[-1]

    yield start
    for bot in started:
        if bot.process.poll() is None:
            bot.kill()


def request_mail(n: int) -> bytes:
    return _mail(f"c{n}@zavod.example", f"<req-{n}@zavod.example>",
                 f"Не запускается АРМ диспетчера №{n}",
                 "Добрый день! АРМ диспетчера не запускается.\n\nИванов Иван, ООО «Завод»")


def reply_mail(n: int) -> bytes:
    """A reply to request mail ``n``, put in right after it: its sender's, or a colleague's
    (then only the References tie it to the original)."""
    sender = f"c{n}@zavod.example" if n % 2 else "ivanov@zavod.example"
    return _mail(sender, f"<re-{n}@zavod.example>", f"Re: Не запускается АРМ диспетчера №{n}",
                 f"Дополнение: в журнале ошибка 0x{n:04x}.", refs=f"<req-{n}@zavod.example>")


def _mail(sender: str, message_id: str, subject: str, text: str, refs: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@example.test", subject
    msg["Message-ID"], msg["Date"] = message_id, "Sun, 06 Dec 2026 10:00:00 +0300"
    if refs:
        msg["In-Reply-To"] = msg["References"] = refs
    msg.set_content(text)
    return msg.as_bytes()


class Stream(threading.Thread):
    """New requests, each followed by a reply to it ``REPLY_AFTER`` seconds later: by then the
    original is stored and in some daemon's batch, and the reply may go to another daemon."""

    def __init__(self, desk: Desk) -> None:
        super().__init__(daemon=True)
        self.desk = desk
        self.appended: list[tuple[str, float]] = []  # Message-ID (no brackets), wall clock time

    def run(self) -> None:
        for n in range(REQUESTS):
            self._append(request_mail(n), f"req-{n}@zavod.example")
            time.sleep(REPLY_AFTER)
            self._append(reply_mail(n), f"re-{n}@zavod.example")
            time.sleep(INTERVAL)

    def _append(self, mail: bytes, message_id: str) -> None:
        self.desk.dovecot.append(self.desk.mailbox.user, mail)
        self.appended.append((message_id, time.time()))


def holder(desk: Desk, lease: str) -> int | None:
    """The pid of the `mailbot run` holding ``lease`` (from its lease connection's name)."""
    with psycopg.connect(desk.config.database.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 "
            "AND l.granted AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())", (LEASE_SPACE, lease_key(lease))).fetchone()
    return int(row[0].split()[2]) if row else None


def stored_at(desk: Desk) -> dict[str, float]:
    """When each stored mail was committed (wall clock), by Message-ID."""
    with psycopg.connect(desk.config.database.url) as conn:
        return {key[4:]: at.timestamp() for key, at in conn.execute(
            "SELECT dedup_key, received_at FROM inbound")}


# ---------------------------------------------------------------- the parts, one rule each

def test_a_mail_is_tied_to_its_sender_its_references_and_its_subjects_request_number():
    raw = (b"From: =?utf-8?b?0JjQstCw0L3QvtCy?= <Ivanov@Zavod.example>\r\n"
           b"Subject: =?utf-8?b?UmU6IFvQotCfLTIwMjYtMDAwMTIzXQ==?=\r\n"
           b"Message-ID: <a@zavod.example>\r\nIn-Reply-To: <x@tecon.example>\r\n"
           b"References: <root@zavod.example>\r\n <x@tecon.example>\r\n\r\ntext")
    assert thread_keys(raw, dedup_key(raw)) == [
        "from:ivanov@zavod.example", "mid:a@zavod.example", "mid:root@zavod.example",
        "mid:x@tecon.example", "num:2026-123"]


def test_a_reply_waits_while_its_original_is_in_another_daemons_batch(desk):
    with desk.sessions.begin() as session:
        store(session, [RawMail(request_mail(1), "test"), RawMail(request_mail(2), "test")])
    other = desk.sessions()
    other.begin()
    held, _ = claim_inbound(other, 1)  # another daemon's batch holds request 1
    assert [row.dedup_key for row in held] == ["mid:req-1@zavod.example"]
    with desk.sessions.begin() as session:  # a colleague's reply to request 1 arrives
        store(session, [RawMail(reply_mail(0).replace(b"req-0", b"req-1"), "test")])

    with desk.sessions.begin() as session:
        ready, waiting = claim_inbound(session, 100)
        assert [row.dedup_key for row in ready] == ["mid:req-2@zavod.example"]
        assert waiting == 1
    other.rollback()  # that batch ends (here without processing): the reply is anybody's
    with desk.sessions.begin() as session:
        ready, waiting = claim_inbound(session, 100)
        assert [row.dedup_key for row in ready] == [
            "mid:req-1@zavod.example", "mid:req-2@zavod.example", "mid:re-0@zavod.example"]
        assert waiting == 0
    other.close()


def test_a_folder_is_watched_by_one_daemon_and_taken_over_when_it_dies(desk):
    engine, stop, health = desk.sessions.kw["bind"], threading.Event(), DatabaseHealth()
    first = Leases(engine, ["support/INBOX", CLOCK], stop, health)
    second = Leases(engine, ["support/INBOX", CLOCK], stop, health)
    with psycopg.connect(first.conninfo, autocommit=True) as one, \
            psycopg.connect(second.conninfo, autocommit=True) as two:
        first.beat(one)
        second.beat(two)
        assert first.held() == ["support/INBOX", CLOCK] and second.held() == []
        # the server probes an idle lease connection itself: a half-open one is dropped in seconds
        assert one.execute("SHOW tcp_keepalives_idle").fetchone()[0] in ("5s", "5")
    taken = time.monotonic()
    while not second.held():  # the first daemon's connection is gone: its locks with it
        with psycopg.connect(second.conninfo, autocommit=True) as two:
            second.beat(two)
            if second.held():
                break
        assert time.monotonic() - taken < 5
    assert second.held() == ["support/INBOX", CLOCK]


def test_only_the_daemon_holding_the_clock_lease_runs_the_clock_jobs(desk, monkeypatch):
    ran: list[str] = []
    monkeypatch.setattr(scheduler_module, "run_timers", lambda daemon: ran.append("timers"))
    monkeypatch.setattr(scheduler_module.SlaClock, "run", lambda clock: ran.append("sla"))
    daemon = Daemon(desk.config, desk.sessions, desk.clock)
    jobs = clock_jobs(make_scheduler(daemon))
    daemon.leases = Leases(desk.sessions.kw["bind"], [CLOCK], threading.Event(), DatabaseHealth())
    with psycopg.connect(daemon.leases.conninfo, autocommit=True) as holder_conn:
        with psycopg.connect(daemon.leases.conninfo, autocommit=True) as conn:
            holder_conn.execute("SELECT pg_advisory_lock(%s, %s)", (LEASE_SPACE, lease_key(CLOCK)))
            daemon.leases.beat(conn)  # another daemon is the leader
            for job in jobs:
                job.func()
            assert ran == [] and not daemon.leader()
        # the leader's connection closes (it died): the lease is free, this daemon takes it
        holder_conn.execute("SELECT pg_advisory_unlock_all()")
        with psycopg.connect(daemon.leases.conninfo, autocommit=True) as conn:
            daemon.leases.beat(conn)
            for job in jobs:
                job.func()
            assert daemon.leader()
    assert ran == ["timers", "sla"]


def test_three_daemons_killed_in_turn_lose_nothing_and_answer_once(site, start_daemon, tmp_path):
    bots = [start_daemon() for _ in range(DAEMONS)]
    folder_lease = f"{site.mailbox.user}@{site.mailbox.host}/INBOX"
    wait_until(lambda: holder(site, folder_lease) and holder(site, CLOCK), timeout=TAKEOVER,
               what="the leases to be taken")
    stream = Stream(site)
    stream.start()
    kills, takeovers = [], []
    restarts: list[threading.Thread] = []
    while stream.is_alive() and len(kills) < 6:
        stream.join(KILL_EVERY)
        if not stream.is_alive():
            break
        watching = holder(site, folder_lease)
        live = [b for b in bots if b.process.poll() is None]  # (the restarted one may be starting)
        kill_watcher = len(kills) % 2 == 0  # the watcher, then another one
        victim = next((b for b in live if (b.process.pid == watching) == kill_watcher), None)
        if victim is None:
            continue
        killed_at = time.time()
        victim.kill()
        bots.remove(victim)
        kills.append((killed_at, kill_watcher))
        restarts.append(threading.Thread(target=lambda: bots.append(start_daemon())))
        restarts[-1].start()  # started again at once, as systemd does
        if kill_watcher:
            takeovers.append(wait_until(
                lambda: holder(site, folder_lease) not in (None, watching), timeout=TAKEOVER,
                what="another daemon to watch the folder"))
    for thread in restarts:
        thread.join()
    assert len(bots) == DAEMONS
    stream.join()
    mails = 2 * REQUESTS
    wait_until(lambda: count(site, Inbound, Inbound.status == "processed") == mails, timeout=60,
               what="every mail to be processed")
    wait_until(lambda: count(site, Outbox, Outbox.status != "sent") == 0, timeout=30,
               what="every answer to be sent")

    # 0 lost: every mail put into the mailbox is stored once and processed, the INBOX is empty
    appended = dict(stream.appended)
    assert len(appended) == mails
    stored = stored_at(site)
    assert set(stored) == set(appended)
    assert count(site, Inbound, Inbound.status != "processed") == 0
    assert (folder(site, "INBOX"), folder(site, "Processed")) == (0, mails)
    # 0 duplicate requests: one per new mail, numbered without gaps; each reply on its request
    with site.sessions() as session:
        numbers = session.scalars(select(Request.number)).all()
        request_of = dict(session.execute(
            select(Inbound.dedup_key, Message.request_id)
            .join(Message, Message.inbound_id == Inbound.id)).all())
        outbox = set(session.scalars(select(Outbox.message_id)).all())
    assert len(numbers) == REQUESTS
    assert sorted(int(number.rsplit("-", 1)[1]) for number in numbers) == list(range(1, REQUESTS + 1))
    for n in range(REQUESTS):
        original = request_of[f"mid:req-{n}@zavod.example"]
        assert original is not None and request_of[f"mid:re-{n}@zavod.example"] == original, n
    # answered once: at most one mail twice per kill (the one on the wire), nothing lost
    sent = Counter(m.parsed()["Message-ID"].strip("<>") for m in site.sink.messages)
    assert set(sent) == outbox
    duplicates = sum(sent.values()) - len(sent)
    assert duplicates <= len(kills)
    # the folder was watched again within seconds; mail put in after a kill was stored soon
    after_kill = [min(stored[mid] for mid, at in stream.appended if at > killed) - killed
                  for killed, watcher in kills if watcher]
    print(f"\n{DAEMONS} daemons, {mails} mails, {len(kills)} kills ({len(takeovers)} of the "
          f"folder's watcher): lease taken over after "
          f"{', '.join(f'{s:.2f}' for s in takeovers)} s; first mail put in after the kill "
          f"stored after {', '.join(f'{s:.2f}' for s in after_kill)} s; "
          f"{duplicates} mail(s) sent twice; {len(outbox)} mails sent")
    assert len(kills) >= 4 and len(takeovers) >= 2 and max(takeovers) < TAKEOVER
    assert max(after_kill) < 2 * TAKEOVER
    for bot in bots:
        assert bot.stop() == 0
    logs = [path.read_text(errors="replace") for path in sorted(tmp_path.glob("daemon-*/mailbot.log"))]
    assert not any("Traceback" in log or "quarantined" in log for log in logs)
    shares = [log.count("INFO mailbot.processor: inbound ") for log in logs]
    print(f"mail processed by each daemon process, in the order they were started: {shares}")
    assert sum(shares) >= mails and sum(1 for share in shares if share) >= 2  # the work is shared
