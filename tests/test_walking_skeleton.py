"""End to end against Dovecot, PostgreSQL and an SMTP sink: mail in → request → acknowledgement out."""
from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone
from email.header import Header
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import func, select, update

from mailbot.clock import FrozenClock
from mailbot.config import load_config, with_overrides
from mailbot.daemon import Daemon
from mailbot.outbox import Outgoing, enqueue
from mailbot.register import db, files
from mailbot.register.crm import import_text
from mailbot.register.db import binary_cursor
from mailbot.register.models import AttachmentRow, Inbound, MailboxState, Message, Outbox, Request
from mailbot.render import Rendered
from mailbot.transport.imap import FolderSync, connect
from mailbot.transport.smtp import SmtpSender
from tests.mailflow import CRM


@pytest.fixture
def config(database_url, mailbox, smtp_sink):
    return with_overrides(
        load_config(None, environ={}),
        database={"url": database_url},
        imap={"host": mailbox.host, "port": mailbox.port, "ssl": False,
              "username": mailbox.user, "password": mailbox.password, "poll_interval": 0.5},
        smtp={"host": smtp_sink.host, "port": smtp_sink.port, "retry_base": 60.0},
        support={"address": mailbox.user})


@pytest.fixture
def sessions(config):
    engine = db.make_engine(config.database.url)
    db.init_schema(engine)
    sessions = db.make_sessionmaker(engine)
    with sessions.begin() as session:  # the customer's company is in the CRM, with a contract
        import_text(session, CRM)
    yield sessions
    engine.dispose()


CUSTOMER = "ivanov@zavod.example"


def acks(sink, count: int, timeout: float = 5.0) -> list:
    """The acknowledgements the customer received (staff notifications go elsewhere)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in sink.messages if m.rcpt_tos == [CUSTOMER]]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) == count, [(m.rcpt_tos, m.parsed()["Subject"]) for m in sink.messages]
            return found
        time.sleep(0.05)


def customer_mail(subject: str = "Не запускается АРМ диспетчера", *, sender="ivanov@zavod.example",
                  in_reply_to: str | None = None, body: str = "Добрый день! После обновления "
                  "драйверов система не запускается.\n\nИванов Иван Иванович, ООО «Завод»",
                  attachment: bytes | None = b"log line 1\nlog line 2\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{Header('Иван Иванов', 'windows-1251').encode()} <{sender}>"
    msg["To"] = "support@example.test"
    msg["Subject"] = Header(subject, "windows-1251").encode()
    msg["Message-ID"] = make_msgid(domain="zavod.example")
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0300"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        msg["References"] = f"<{in_reply_to}>"
    msg.set_content(body, charset="windows-1251")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="text", subtype="plain", filename="журнал.log")
    return msg.as_bytes()


def run_once(config, sessions, clock=None):
    return asyncio.run(Daemon(config, sessions, clock or FrozenClock(NOW)).run_once())


NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)


def folder_count(mailbox, folder: str) -> int:
    with mailbox.client() as client:
        client.select_folder(folder, readonly=True)
        return len(client.search("ALL"))


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_customer_mail_is_registered_and_acknowledged_in_its_thread(config, sessions, mailbox,
                                                                      smtp_sink, dovecot):
    raw = customer_mail()
    dovecot.append(mailbox.user, raw)

    result = run_once(config, sessions)

    assert result.processed == 1
    (ack,) = acks(smtp_sink, 1)
    reply = ack.parsed()
    with sessions() as session:
        request = session.scalar(select(Request))
        assert request.number == "ТП-2026-000001"
        assert request.subject == "Не запускается АРМ диспетчера"
        assert request.requester_email == "ivanov@zavod.example"
        incoming = session.scalar(select(Message).where(Message.direction == "in"))
        (attachment,) = session.scalars(select(AttachmentRow)).all()
        with binary_cursor(session) as cursor:
            assert files.read(cursor, attachment.sha256, incoming.inbound_id) == \
                b"log line 1\nlog line 2\n"
        assert attachment.filename == "журнал.log"
    original_id = incoming.message_id
    assert ack.rcpt_tos == ["ivanov@zavod.example"]
    assert "ТП-2026-000001" in reply["Subject"] and reply["Subject"].startswith("Re:")
    assert reply["In-Reply-To"] == f"<{original_id}>"
    assert f"<{original_id}>" in reply["References"]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Loop"] == mailbox.user
    assert "ТП-2026-000001" in reply.get_body(("plain",)).get_content()
    assert reply.get_body(("html",)) is not None
    assert folder_count(mailbox, "INBOX") == 0
    assert folder_count(mailbox, "Processed") == 1


def test_customer_reply_lands_in_the_same_request(config, sessions, mailbox, smtp_sink, dovecot):
    dovecot.append(mailbox.user, customer_mail())
    run_once(config, sessions)
    (ack,) = acks(smtp_sink, 1)
    ack_id = ack.parsed()["Message-ID"].strip("<>")

    dovecot.append(mailbox.user, customer_mail("Re: ответ", in_reply_to=ack_id, attachment=None))
    # the number typed with Latin look-alike letters (T, P as Latin) in the subject
    dovecot.append(mailbox.user, customer_mail("Re: TП-2026-000001 ещё вопрос", attachment=None))
    run_once(config, sessions)

    assert count(sessions, Request) == 1
    with sessions() as session:
        incoming = session.scalars(select(Message).where(Message.direction == "in")).all()
        assert len(incoming) == 3
        assert {m.request_id for m in incoming} == {session.scalar(select(Request.id))}
    assert len(acks(smtp_sink, 1)) == 1  # replies are not acknowledged again


def test_running_the_daemon_again_creates_nothing_twice(config, sessions, mailbox, smtp_sink,
                                                         dovecot):
    dovecot.append(mailbox.user, customer_mail())
    run_once(config, sessions)
    run_once(config, sessions)
    # the same message delivered again (e.g. copied back by a person) is not a new request
    with sessions() as session:
        raw = session.scalar(select(Inbound.raw))
    dovecot.append(mailbox.user, raw)
    run_once(config, sessions)

    assert count(sessions, Request) == 1
    assert count(sessions, Inbound) == 1
    assert count(sessions, Outbox) == 2  # the acknowledgement and the staff notification
    assert len(smtp_sink.wait_for(2)) == 2


def test_restart_between_stored_and_moved_creates_no_duplicate(config, sessions, mailbox, smtp_sink,
                                                                dovecot, monkeypatch):
    dovecot.append(mailbox.user, customer_mail())
    dovecot.append(mailbox.user, customer_mail("Второе обращение"))

    def crash(self, client, uids):
        if uids:
            raise KeyboardInterrupt("killed after the commit, before the move")

    with monkeypatch.context() as patch:
        patch.setattr(FolderSync, "_move", crash)
        sync = FolderSync(config.imap, "INBOX", sessions)
        client = connect(config.imap)
        with pytest.raises(KeyboardInterrupt):
            sync.sync(client)
        client.logout()
    assert count(sessions, Inbound) == 2  # committed before the crash
    assert folder_count(mailbox, "INBOX") == 2  # but still on the server

    run_once(config, sessions)
    run_once(config, sessions)

    assert count(sessions, Request) == 2
    assert len(acks(smtp_sink, 2)) == 2
    assert folder_count(mailbox, "INBOX") == 0
    assert folder_count(mailbox, "Processed") == 2


def test_uidvalidity_change_resyncs_without_duplicates(config, sessions, mailbox, smtp_sink,
                                                        dovecot):
    dovecot.append(mailbox.user, customer_mail())
    run_once(config, sessions)
    with sessions.begin() as session:  # as if the server had rebuilt the folder
        session.execute(update(MailboxState).values(uidvalidity=MailboxState.uidvalidity + 1))
    # the old message reappears in INBOX with a new UID
    with mailbox.client() as client:
        client.select_folder("Processed")
        client.move(client.search("ALL"), "INBOX")

    run_once(config, sessions)

    assert count(sessions, Request) == 1
    assert len(acks(smtp_sink, 1)) == 1
    assert folder_count(mailbox, "INBOX") == 0


def test_automatic_mail_gets_no_answer_and_opens_no_request(config, sessions, mailbox, smtp_sink,
                                                             dovecot):
    auto = EmailMessage()
    auto["From"] = "robot@zavod.example"
    auto["To"] = mailbox.user
    auto["Subject"] = "Автоответ: в отпуске до 1 декабря"
    auto["Auto-Submitted"] = "auto-replied"
    auto["Message-ID"] = make_msgid()
    auto.set_content("Я в отпуске.")
    own = EmailMessage()
    own["From"] = mailbox.user
    own["To"] = mailbox.user
    own["Subject"] = "loop"
    own["Message-ID"] = make_msgid()
    own.set_content("our own mail came back")
    dovecot.append(mailbox.user, auto.as_bytes())
    dovecot.append(mailbox.user, own.as_bytes())

    result = run_once(config, sessions)

    assert result.processed == 2
    assert count(sessions, Request) == 0
    assert count(sessions, Outbox) == 0
    assert folder_count(mailbox, "INBOX") == 0


def test_acknowledgement_is_retried_when_smtp_fails(config, sessions, mailbox, smtp_sink, dovecot):
    clock = FrozenClock(NOW)
    smtp_sink.fail_next(1, code=451)
    dovecot.append(mailbox.user, customer_mail())
    run_once(config, sessions, clock)
    assert acks(smtp_sink, 0, timeout=0) == []
    with sessions() as session:
        row = session.scalar(select(Outbox).where(Outbox.kind == "ack"))
        assert (row.status, row.attempts) == ("pending", 1)
        assert "451" in row.last_error

    sender = SmtpSender(config.smtp, sessions, clock)
    assert asyncio.run(sender.send_due()) == 0  # not due yet: backoff
    clock.advance(seconds=61)
    assert asyncio.run(sender.send_due()) == 1
    assert len(acks(smtp_sink, 1)) == 1


def test_queued_mail_goes_out_over_one_connection_past_a_refused_one(config, sessions, smtp_sink):
    with sessions.begin() as session:
        for n in range(3):
            enqueue(session, config, Outgoing(kind="relay", to=(f"c{n}@zavod.example",),
                                              automatic=False,
                                              content=Rendered(f"Ответ {n}", "Текст", None)), NOW)
    smtp_sink.fail_next(1, code=550)
    one = with_overrides(config, smtp={"connections": 1})
    assert asyncio.run(SmtpSender(one.smtp, sessions, FrozenClock(NOW)).send_due()) == 2
    received = smtp_sink.wait_for(2)
    assert [m.rcpt_tos for m in received] == [["c1@zavod.example"], ["c2@zavod.example"]]
    assert len({m.peer for m in received}) == 1  # the connection goes on past the refusal
    with sessions() as session:
        rows = session.execute(select(Outbox.status, Outbox.last_error).order_by(Outbox.id)).all()
    assert [status for status, _ in rows] == ["failed", "sent", "sent"]
    assert "550" in rows[0].last_error


def test_daemon_answers_within_seconds_with_idle(config, sessions, mailbox, smtp_sink, dovecot):
    from mailbot.clock import Clock

    daemon = Daemon(config, sessions, Clock())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run_forever(),))
    thread.start()
    try:
        dovecot.append(mailbox.user, customer_mail())
        (ack,) = acks(smtp_sink, 1, timeout=10)
        assert "ТП-2026-000001" in ack.parsed()["Subject"]
    finally:
        loop.call_soon_threadsafe(daemon.stop)
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_cli_run_once_uses_environment_overrides(config, sessions, mailbox, smtp_sink, dovecot,
                                                  monkeypatch, capsys):
    from mailbot.cli.main import main

    for key, value in {"DATABASE_URL": config.database.url, "IMAP_HOST": config.imap.host,
                       "IMAP_PORT": str(config.imap.port), "IMAP_SSL": "false",
                       "IMAP_USERNAME": mailbox.user, "IMAP_PASSWORD": mailbox.password,
                       "SMTP_HOST": smtp_sink.host, "SMTP_PORT": str(smtp_sink.port),
                       "SUPPORT_ADDRESS": mailbox.user}.items():
        monkeypatch.setenv(f"MAILBOT_{key}", value)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    dovecot.append(mailbox.user, customer_mail())

    assert main(["run", "--once"]) == 0
    assert "processed 1" in capsys.readouterr().out
    assert len(acks(smtp_sink, 1)) == 1
    assert main(["requests", "list"]) == 0
    assert "ТП-2026-000001" in capsys.readouterr().out
    assert main(["requests", "show", "ТП-2026-000001"]) == 0
    shown = capsys.readouterr().out
    assert "created" in shown and "new → open" in shown
