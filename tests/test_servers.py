"""The test servers themselves work: PostgreSQL, Dovecot, SMTP sink."""

from __future__ import annotations

import asyncio
import time
import uuid
from email.message import EmailMessage

import aiosmtplib
import psycopg
import pytest
from imapclient.exceptions import LoginError
from sqlalchemy import create_engine, text

from tests.servers import Dovecot, Mailbox, SmtpSink, drop_database, fresh_database

RAW = "From: Иван <ivan@example.test>\r\nSubject: =?utf-8?b?0JTRgNCw0LnQstC10YA=?=\r\n\r\nтело\r\n".encode()


def test_fresh_database_has_russian_fts_and_trgm(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE EXTENSION pg_trgm")
        assert conn.execute("SELECT to_tsvector('russian', 'драйвера')::text").fetchone() == ("'драйвер':1",)
        assert conn.execute("SELECT similarity('драйвер', 'драйвера') > 0.5").fetchone() == (True,)
        assert conn.execute("SELECT lower('СИСТЕМА Ёлка')").fetchone() == ("система ёлка",)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_database_url_works_with_sqlalchemy(database_url: str) -> None:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (s text)"))
        conn.execute(text("INSERT INTO t VALUES ('заявка')"))
        assert conn.execute(text("SELECT s FROM t")).scalar_one() == "заявка"
    engine.dispose()


def test_drop_database_closes_open_connections(pg_base_url: str) -> None:
    url, other = fresh_database(pg_base_url), fresh_database(pg_base_url)
    drop_database(other)
    assert url != other
    with psycopg.connect(url):
        drop_database(url)  # would block without WITH (FORCE)
    for gone in (url, other):
        with pytest.raises(psycopg.OperationalError, match="does not exist"):
            psycopg.connect(gone).close()


def test_dovecot_folders_append_idle_move(dovecot: Dovecot, mailbox: Mailbox) -> None:
    with mailbox.client() as watcher:
        names = {name for _flags, _sep, name in watcher.list_folders()}
        assert {"INBOX", "Sent", "Processed"} <= names
        watcher.select_folder("INBOX")
        watcher.idle()
        started = time.monotonic()
        uid = dovecot.append(mailbox.user, RAW)
        responses = watcher.idle_check(timeout=5)
        woke_after = time.monotonic() - started
        watcher.idle_done()
        assert (1, b"EXISTS") in responses
        assert woke_after < 4  # Dovecot waits ~0.5 s; a poll of Dovecot's own would be 30 s
        assert watcher.search(["SUBJECT", "Драйвер"], charset="UTF-8") == [uid]
        assert watcher.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == RAW
        watcher.move([uid], "Processed")
        assert watcher.search("ALL") == []
        assert watcher.folder_status("Processed", ["MESSAGES"])[b"MESSAGES"] == 1


def test_mailboxes_are_isolated(dovecot: Dovecot, mailbox: Mailbox) -> None:
    other = dovecot.new_mailbox()
    assert other.user != mailbox.user
    dovecot.append(mailbox.user, RAW)
    with other.client() as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_added_user_logs_in_at_once_and_bad_password_is_fast(dovecot: Dovecot) -> None:
    user = f"late-{uuid.uuid4().hex[:8]}@example.test"
    mailbox = dovecot.add_user(user, "pa55")
    with dovecot.client(user) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    started = time.monotonic()
    for _ in range(3):  # each ~0.5 s (Dovecot's failure queue); anvil's penalty adds 2, 4, 8 ... s
        with pytest.raises(LoginError):
            Mailbox(mailbox.host, mailbox.port, user, "wrong").client()
    assert time.monotonic() - started < 4  # with the penalty: 6 s or more


def send(sink: SmtpSink, subject: str) -> None:
    msg = EmailMessage()
    msg["From"] = "Поддержка <bot@example.test>"
    msg["To"] = "ivan@example.test"
    msg["Subject"] = subject
    msg.set_content("Ваша заявка принята.")
    asyncio.run(aiosmtplib.send(msg, hostname=sink.host, port=sink.port))


def test_smtp_sink_receives_cyrillic_subject(smtp_sink: SmtpSink) -> None:
    send(smtp_sink, "Заявка №1 принята")
    [received] = smtp_sink.wait_for(1, timeout=5)
    assert received.mail_from == "bot@example.test"
    assert received.rcpt_tos == ["ivan@example.test"]
    assert received.parsed()["Subject"] == "Заявка №1 принята"
    assert received.parsed().get_content() == "Ваша заявка принята.\r\n"  # raw CRLF kept
    with pytest.raises(AssertionError, match="got 1"):
        smtp_sink.wait_for(2, timeout=0.1)
    smtp_sink.clear()
    assert smtp_sink.messages == []


def test_smtp_sink_fail_next(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next(2)
    for attempt in range(2):
        with pytest.raises(aiosmtplib.SMTPDataError) as error:
            send(smtp_sink, f"попытка {attempt}")
        assert error.value.code == 451
    send(smtp_sink, "попытка 2")
    assert [m.parsed()["Subject"] for m in smtp_sink.wait_for(1)] == ["попытка 2"]
    assert smtp_sink.rejected == 2
