"""Mail hygiene (DESIGN.md §7): bounces, loops and storms, MTA intake and quarantine."""
from __future__ import annotations

import io
import subprocess
import sys
from email.utils import make_msgid

from sqlalchemy import any_, func, select

from mailbot.cli.main import EX_DATAERR, EX_OK, EX_TEMPFAIL, main
from mailbot.config import with_overrides
from mailbot.register.models import Inbound, Outbox, Quarantine, Request
from tests.mailflow import Desk, body

CUSTOMER = "ivanov@zavod.example"


def bounce_of(message_id: str, recipient: str) -> bytes:
    """A Postfix-style RFC 3464 bounce of the mail with ``message_id``."""
    return f"""From: MAILER-DAEMON@mx.zavod.example (Mail Delivery System)
To: support@example.test
Subject: Undelivered Mail Returned to Sender
Return-Path: <>
Message-ID: {make_msgid()}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.zavod.example

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--b1
Content-Type: text/rfc822-headers

Message-ID: <{message_id}>
Subject: Re: [ТП-2026-000001]

--b1--
""".replace("\n", "\r\n").encode()


def count(desk: Desk, model) -> int:
    with desk.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_bounce_of_our_answer_alerts_staff_and_never_creates_a_request(desk):
    desk.write(CUSTOMER, "Настройка", "Как настроить опрос?")
    desk.run()
    ack = desk.mail_to(CUSTOMER).parsed()
    desk.new_mail()

    desk.dovecot.append(desk.mailbox.user, bounce_of(ack["Message-ID"].strip("<>"), CUSTOMER))
    desk.run()

    assert count(desk, Request) == 1
    with desk.sessions() as session:
        row = session.scalar(select(Outbox).where(Outbox.kind == "ack"))
        assert row.status == "failed" and "5.1.1" in row.last_error
    alert = desk.mail_to("tp1@tecon.example")
    assert "не доставлено" in alert.parsed()["Subject"] and "5.1.1" in body(alert)


def test_an_auto_responder_that_answers_everything_gets_a_bounded_exchange(desk):
    """A careless auto-responder (no RFC 3834 headers, no threading) cannot start a ping-pong."""
    limit = desk.config.support.ack_limit_per_hour
    desk.write("dispatch@zavod.example", "Заявка", "Как настроить опрос?")
    exchanged = 1
    for _ in range(20):
        desk.run()
        answers = [m for m in desk.new_mail() if "dispatch@zavod.example" in m.rcpt_tos]
        exchanged += len(answers)
        for answer in answers:  # the responder answers every mail with a brand-new message
            desk.write("dispatch@zavod.example", "Ваше письмо получено", "Спасибо, ваше письмо получено.")
            exchanged += 1
        if not answers:
            break
    assert exchanged <= 2 * limit + 2
    with desk.sessions() as session:
        automatic = session.scalar(select(func.count()).select_from(Outbox).where(
            any_(Outbox.recipients) == "dispatch@zavod.example"))
    assert automatic == limit


def test_auto_replies_carry_rfc3834_headers_and_our_loop_header(desk):
    desk.write(CUSTOMER, "Настройка", "Как настроить опрос?")
    desk.run()
    ack = desk.mail_to(CUSTOMER).parsed()
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["X-Loop"] == desk.mailbox.user
    # our own mail coming back (e.g. a forwarding loop) is never answered
    looped = ack
    del looped["To"]
    looped["To"] = desk.mailbox.user
    desk.dovecot.append(desk.mailbox.user, looped.as_bytes())
    desk.run()
    assert desk.new_mail() == []


# ---------------------------------------------------------------- MTA pipe


def run_ingest(raw: bytes, monkeypatch, database_url: str) -> int:
    monkeypatch.setenv("MAILBOT_DATABASE_URL", database_url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    return main(["ingest"])


def test_ingest_stores_the_message_then_exits_0(desk, monkeypatch, database_url):
    raw = b"From: ivanov@zavod.example\r\nSubject: test\r\nMessage-ID: <x1@zavod>\r\n\r\nhello\r\n"
    assert run_ingest(raw, monkeypatch, database_url) == EX_OK
    assert run_ingest(raw, monkeypatch, database_url) == EX_OK  # an MTA retry: stored once
    assert count(desk, Inbound) == 1
    desk.run()
    assert count(desk, Request) == 1


def test_mail_stored_by_ingest_wakes_the_running_daemon_at_once(desk, monkeypatch, database_url):
    """LISTEN/NOTIFY: no waiting for the 5-second sweep."""
    import asyncio
    import threading
    import time

    from mailbot.clock import Clock
    from mailbot.daemon import Daemon

    daemon = Daemon(desk.config, desk.sessions, Clock())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run_forever(),))
    thread.start()
    try:
        time.sleep(1.5)  # the daemon's first sweep is over; the next is 5 s away
        _wait_for_listener(desk)  # a slow machine may take longer to LISTEN
        started = time.monotonic()
        raw = (b"From: ivanov@zavod.example\r\nSubject: Piped\r\nMessage-ID: <pipe1@zavod>\r\n"
               b"\r\nHello\r\n")
        assert run_ingest(raw, monkeypatch, database_url) == EX_OK
        desk.sink.wait_for(1, timeout=10)
        assert time.monotonic() - started < 3.0
    finally:
        loop.call_soon_threadsafe(daemon.stop)
        thread.join(timeout=15)


def test_ingest_exits_65_for_input_that_is_not_mail(monkeypatch, database_url):
    assert run_ingest(b"", monkeypatch, database_url) == EX_DATAERR
    assert run_ingest(b"\x00\x01 garbage", monkeypatch, database_url) == EX_DATAERR


def test_ingest_exits_75_when_the_database_is_unreachable(tmp_path):
    """The MTA keeps the message and retries (EX_TEMPFAIL), as with rt-mailgate."""
    env = {"PATH": "/usr/bin:/bin", "MAILBOT_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "mailbot.cli.main", "ingest"], env=env,
                          input=b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n",
                          capture_output=True, timeout=60)
    assert done.returncode == EX_TEMPFAIL, done.stderr
    assert b"Traceback" not in done.stderr


# ---------------------------------------------------------------- quarantine


def test_oversize_mail_is_quarantined_kept_and_can_be_retried(desk, monkeypatch, capsys):
    desk.config = with_overrides(desk.config, limits={"max_message_bytes": 2000})
    desk.write(CUSTOMER, "Большое письмо", "x" * 5000)
    result = desk.run()
    assert (result.processed, result.quarantined) == (0, 1)
    with desk.sessions() as session:
        item = session.scalar(select(Quarantine))
        assert item.stage == "parse" and "too large" in item.error
        assert session.get(Inbound, item.inbound_id).raw  # kept, raw

    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    assert main(["quarantine", "list"]) == 0
    assert "too large" in capsys.readouterr().out
    assert main(["quarantine", "show", str(item.id)]) == 0
    assert "stage: parse" in capsys.readouterr().out
    assert main(["quarantine", "retry", str(item.id)]) == 0
    desk.config = with_overrides(desk.config, limits={"max_message_bytes": 10**6})
    result = desk.run()
    assert result.processed == 1
    assert count(desk, Request) == 1
    assert main(["quarantine", "list"]) == 0
    assert "0 message(s)" in capsys.readouterr().out


def _wait_for_listener(desk, timeout: float = 10.0) -> None:
    """Until the daemon's LISTEN connection is up (a NOTIFY before it would be lost)."""
    import time

    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    with desk.sessions() as session:
        while not session.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query = 'LISTEN mailbot_outbox'")):
            assert time.monotonic() < deadline, "the daemon never listened"
            session.rollback()  # a fresh snapshot of pg_stat_activity
            time.sleep(0.05)
