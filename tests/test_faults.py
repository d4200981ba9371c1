"""Outages against a real `mailbot run` process: PostgreSQL, Dovecot or the SMTP server goes
away under a stream of mail, or the daemon is killed with SIGKILL while it sends.

Each test checks what the operator and the customers would: nothing is lost (every mail
put into the mailbox becomes exactly one request and leaves the INBOX), at most one
mail goes out twice per kill, work resumes within seconds of the server's return, the
log says once that a server went and once that it came back, and the exit codes are
the ones systemd acts on. PostgreSQL here is a private cluster this module stops and
starts (tests/servers.PrivatePostgres); Dovecot is a private instance too.
"""
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy import exc as sa_exc

from mailbot.cli.main import EX_TEMPFAIL, main
from mailbot.outbox import Outgoing, enqueue
from mailbot.register.models import Inbound, Outbox, Request
from mailbot.render import Rendered
from mailbot.supervision import PoolResetNoise, Watchdog, database_outage
from mailbot.transport.notify import OUTBOX, notify
from tests.daemonproc import MailbotProcess, wait_until
from tests.mailflow import Desk
from tests.servers import Dovecot, PrivatePostgres, drop_database, fresh_database

RECOVERY = 10.0  # seconds: the retries wait at most 5 s; the rest is slack for a busy machine


# ---------------------------------------------------------------- servers and the daemon

@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def imap() -> Iterator[Dovecot]:
    server = Dovecot().start()
    yield server
    server.stop()


@pytest.fixture
def site(postgres, imap, smtp_sink) -> Iterator[Desk]:
    """The bot's mailbox, its database on the private PostgreSQL, the SMTP sink."""
    url = fresh_database(postgres.url)
    desk = Desk(url, imap, imap.new_mailbox(), smtp_sink)
    desk.load_crm()
    yield desk
    if not postgres.running:
        postgres.start()
    if imap.paused:
        imap.resume()
    desk.sessions.kw["bind"].dispose()
    drop_database(url)


class Mailbot(MailbotProcess):
    """A `mailbot run` process on the desk's database, mailbox and SMTP sink."""

    def __init__(self, desk: Desk, directory: Path) -> None:
        super().__init__(directory / "mailbot.toml", directory / "mailbot.log")
        self.config.write_text(_toml(desk))


def _toml(desk: Desk) -> str:
    c = desk.config
    return f"""log_level = "INFO"
[database]
url = "{c.database.url}"
[imap]
host = "{c.imap.host}"
port = {c.imap.port}
ssl = false
username = "{c.imap.username}"
password = "{c.imap.password}"
[smtp]
host = "{c.smtp.host}"
port = {c.smtp.port}
retry_base = 2.0
[support]
address = "{c.support.address}"
tp1_address = "{c.support.tp1_address}"
tp2_address = "{c.support.tp2_address}"
ack_limit_per_hour = 1000
unknown_auto_reply_limit_per_hour = 1000
[staff]
trusted_authserv_id = "{c.staff.trusted_authserv_id[0]}"
"""


@pytest.fixture
def bots(site, tmp_path) -> Iterator[Callable[[], Mailbot]]:
    """Start `mailbot run` processes; any still running at the end is killed."""
    started: list[Mailbot] = []

    def start() -> Mailbot:
        started.append(Mailbot(site, tmp_path).start())
        return started[-1]

    yield start
    for bot in started:
        if bot.process.poll() is None:
            bot.kill()


# ---------------------------------------------------------------- mail and the register

def customer_mail(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"c{n}@zavod.example"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Не запускается АРМ диспетчера №{n}"
    msg["Message-ID"] = make_msgid(domain="zavod.example")
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0300"
    msg.set_content("Добрый день! АРМ диспетчера не запускается.\n\nИванов Иван, ООО «Завод»")
    return msg.as_bytes()


class Stream(threading.Thread):
    """Customer mail put into the bot's mailbox, one every ``interval`` seconds."""

    def __init__(self, desk: Desk, count: int, interval: float, first: int = 0) -> None:
        super().__init__(daemon=True)
        self.desk, self.numbers, self.interval = desk, range(first, first + count), interval

    def run(self) -> None:
        for n in self.numbers:
            self.desk.dovecot.append(self.desk.mailbox.user, customer_mail(n))
            time.sleep(self.interval)


def count(desk: Desk, model, *where) -> int:
    with desk.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def folder(desk: Desk, name: str) -> int:
    with desk.mailbox.client() as client:
        client.select_folder(name, readonly=True)
        return len(client.search("ALL"))


def assert_every_mail_answered_once(desk: Desk, mails: int) -> None:
    """Each mail is one request, out of the INBOX, with one acknowledgement and one staff notice."""
    assert count(desk, Inbound) == mails
    assert count(desk, Request) == mails
    assert (folder(desk, "INBOX"), folder(desk, "Processed")) == (0, mails)
    sent = desk.sink.wait_for(2 * mails, timeout=RECOVERY)
    ids = Counter(m.parsed()["Message-ID"] for m in sent)
    assert len(ids) == 2 * mails and max(ids.values()) == 1
    assert sorted(r for m in sent for r in m.rcpt_tos if r.startswith("c")) == sorted(
        f"c{n}@zavod.example" for n in range(mails))


# ---------------------------------------------------------------- outages

def test_intake_and_sending_survive_a_database_outage(site, postgres, bots):
    bot = bots()
    stream = Stream(site, count=40, interval=0.25)
    stream.start()
    wait_until(lambda: count(site, Request) >= 3, timeout=RECOVERY, what="the first requests")
    postgres.stop()
    time.sleep(10)  # mail keeps coming into the mailbox meanwhile
    assert bot.process.poll() is None
    assert folder(site, "INBOX") > 0  # left on the server until it can be committed
    postgres.start()

    back = wait_until(lambda: count(site, Inbound) >= 40, timeout=30, what="the mail to be stored")
    stream.join()
    wait_until(lambda: count(site, Outbox, Outbox.status == "sent") == 80, timeout=30,
               what="the answers")

    assert back < RECOVERY
    assert_every_mail_answered_once(site, 40)
    assert bot.stop() == 0
    assert len(bot.lines("database unavailable")) == 1
    assert len(bot.lines("database available again")) == 1
    assert "Traceback" not in bot.log


def test_intake_survives_an_imap_outage(site, imap, bots):
    bot = bots()
    for n in range(3):
        site.dovecot.append(site.mailbox.user, customer_mail(n))
    wait_until(lambda: count(site, Request) == 3, timeout=RECOVERY, what="the first requests")
    imap.pause()
    for n in range(3, 8):  # the MTA delivers into the mailbox while the IMAP server is down
        site.dovecot.deliver(site.mailbox.user, customer_mail(n))
    time.sleep(4)
    imap.resume()

    back = wait_until(lambda: count(site, Request) == 8, timeout=30, what="the requests")

    assert back < RECOVERY
    assert_every_mail_answered_once(site, 8)
    assert bot.stop() == 0
    assert len(bot.lines("IMAP server unavailable")) == 1
    assert len(bot.lines("IMAP server available again")) == 1
    assert "Traceback" not in bot.log


def test_sending_survives_an_smtp_outage_and_sends_the_backlog_at_once(site, bots):
    port = site.sink.port
    site.sink.stop()
    bot = bots()
    Stream(site, count=10, interval=0.2).run()
    wait_until(lambda: count(site, Outbox) == 20, timeout=RECOVERY, what="the answers to be queued")
    time.sleep(4)
    site.sink.start(port)

    back = wait_until(lambda: len(site.sink.messages) == 20, timeout=30, what="the answers")

    assert back < RECOVERY
    assert_every_mail_answered_once(site, 10)
    with site.sessions() as session:  # no attempt was spent on the outage: one each, sent
        assert set(session.execute(select(Outbox.status, Outbox.attempts))) == {("sent", 1)}
    assert bot.stop() == 0
    assert len(bot.lines("WARNING")) == 1 and len(bot.lines("unreachable")) == 1
    assert len(bot.lines("SMTP server available again")) == 1


def test_a_daemon_killed_while_sending_is_replaced_at_once_and_repeats_at_most_one_mail(
        site, bots):
    site.sink.delay = 0.1  # a slow server: the kills land mid-send
    with site.sessions.begin() as session:
        for n in range(40):
            enqueue(session, site.config, Outgoing(kind="relay", to=(f"c{n}@zavod.example",),
                                                   automatic=False,
                                                   content=Rendered(f"Ответ {n}", "Текст", None)),
                    site.clock.now())
        notify(session, OUTBOX)
    kills = 0
    for received in (8, 20):
        bot = bots()
        wait_until(lambda: len(site.sink.messages) >= received, timeout=RECOVERY, what="sending")
        bot.kill()
        kills += 1
        assert count(site, Outbox, Outbox.status == "pending", Outbox.claimed_by.is_not(None)) > 0

    bot = bots()
    took = wait_until(lambda: count(site, Outbox, Outbox.status == "sent") == 40, timeout=30,
                      what="the rest to be sent")

    assert took < RECOVERY  # not a 5-minute lease
    ids = Counter(m.parsed()["Message-ID"] for m in site.sink.messages)
    assert len(ids) == 40
    assert sum(ids.values()) - 40 <= kills
    assert bot.stop() == 0


# ---------------------------------------------------------------- exit codes

def test_a_daemon_without_its_database_exits_75_for_systemd_to_restart_it(site, postgres,
                                                                           tmp_path):
    bot = Mailbot(site, tmp_path)
    postgres.stop()
    result = subprocess.run([sys.executable, "-m", "mailbot", "--config", str(bot.config), "run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EX_TEMPFAIL
    assert "database unavailable" in result.stderr


def test_a_worker_that_dies_is_started_again(caplog):
    stopping, runs = threading.Event(), []

    def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a bug in the error handling")
        stopping.wait()

    watchdog = Watchdog(stopping)
    watchdog.thread("flaky", flaky)

    async def run() -> None:
        task = asyncio.create_task(watchdog.run())
        await asyncio.to_thread(wait_until, lambda: len(runs) == 2, 5.0)
        stopping.set()
        await task
        await watchdog.join()

    asyncio.run(run())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "worker flaky died: a bug in the error handling",
        "worker flaky stopped (a bug in the error handling); starting it again"]


def test_a_daemon_whose_worker_keeps_dying_exits_75(desk, tmp_path, monkeypatch, capsys):
    def broken(self) -> None:
        raise RuntimeError("LISTEN is broken")

    monkeypatch.setattr("mailbot.transport.notify.Listener.run", broken)
    config = tmp_path / "mailbot.toml"
    config.write_text(_toml(desk))
    started = time.monotonic()

    assert main(["--config", str(config), "run"]) == EX_TEMPFAIL

    assert time.monotonic() - started < 15
    assert "giving up: worker listen died 5 times within 60 s, last: LISTEN is broken" in \
        capsys.readouterr().err


def _pool_record(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        return logging.LogRecord("sqlalchemy.pool.impl.QueuePool", logging.ERROR, __file__, 1,
                                 "Exception during reset or similar", (), sys.exc_info())


def test_a_statement_after_the_connection_was_lost_counts_as_the_outage(database_url):
    """A write after the database dropped the connection, in the same transaction (as when an
    SMTP failure is recorded while the database goes down), is the outage, not a bug with a
    traceback; a session's own failed flush is not an outage."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(sa_exc.OperationalError) as lost:
                conn.execute(text("SELECT 1"))
            with pytest.raises(sa_exc.PendingRollbackError) as after:
                conn.execute(text("SELECT 1"))
        assert database_outage(lost.value) and database_outage(after.value)
        assert not database_outage(sa_exc.PendingRollbackError("a failed flush", code="7s2a"))
    finally:
        engine.dispose()


def test_a_connection_the_pool_cannot_reset_in_an_outage_logs_no_traceback():
    """The outage is one line: the pool's traceback for each connection lost with the database
    is dropped, any other pool error is kept."""
    noise = PoolResetNoise()
    assert not noise.filter(_pool_record(psycopg.OperationalError("server closed the connection")))
    assert noise.filter(_pool_record(ValueError("a bug")))
