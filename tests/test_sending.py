"""Sending: refused recipients, an SMTP server that is down, and claims of daemons that died.

Real PostgreSQL, Dovecot and the aiosmtpd sink; the sender runs in this process.
tests/test_faults.py does the same against a real `mailbot run` process.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from mailbot.cli.main import main
from mailbot.daemon import Daemon
from mailbot.outbox import Outgoing, enqueue
from mailbot.register.models import Event, Outbox, UndeliverableAddress
from mailbot.render import Rendered
from mailbot.transport.claims import claim
from mailbot.transport.smtp import UNREACHABLE, SmtpSender
from tests.mailflow import MONDAY_MORNING, Desk

CUSTOMER = "ivanov@zavod.example"
MALFORMED = "553 5.1.3 malformed address"


def sender(desk: Desk):
    """The sender as the daemon wires it (with the workflow's hook for refusals)."""
    return Daemon(desk.config, desk.sessions, desk.clock).sender


def send(desk: Desk) -> int:
    smtp = sender(desk)
    try:
        return asyncio.run(smtp.send_due())
    finally:
        smtp.close()


def queue(desk: Desk, *recipients: str, count: int = 1) -> None:
    with desk.sessions.begin() as session:
        for n in range(count):
            enqueue(session, desk.config, Outgoing(
                kind="relay", to=recipients, automatic=False,
                content=Rendered(f"Ответ {n}", "Текст", None)), MONDAY_MORNING)


def outbox(desk: Desk) -> list[Outbox]:
    with desk.sessions() as session:
        return session.scalars(select(Outbox).order_by(Outbox.id)).all()


def row(desk: Desk, kind: str) -> Outbox:
    (found,) = [r for r in outbox(desk) if r.kind == kind]
    return found


# ---------------------------------------------------------------- refused recipients

def test_a_recipient_our_server_refuses_for_good_is_not_retried_and_staff_are_told(desk):
    desk.sink.refuse(CUSTOMER, MALFORMED)
    desk.write(CUSTOMER, "Не запускается АРМ", "Добрый день! АРМ диспетчера не запускается.")

    desk.run()

    ack = row(desk, "ack")
    assert (ack.status, ack.attempts) == ("failed", 1)
    assert ack.last_error == f"{CUSTOMER}: {MALFORMED}"
    with desk.sessions() as session:
        (entry,) = session.scalars(select(UndeliverableAddress)).all()
        (event,) = session.scalars(select(Event).where(Event.kind == "refused")).all()
    assert (entry.address, entry.reply, entry.outbox_id) == (CUSTOMER, MALFORMED, ack.id)
    assert event.request_id == ack.request_id and MALFORMED in event.details["details"]
    to_staff = [m for m in desk.new_mail() if m.rcpt_tos == ["tp1@tecon.example"]]
    bounce = [m for m in to_staff if "не доставлено" in m.parsed()["Subject"]]
    assert len(bounce) == 1 and MALFORMED in bounce[0].parsed().get_body(("plain",)).get_content()
    assert desk.sink.rcpts.count(CUSTOMER) == 1  # asked once, never again


def test_no_automatic_mail_goes_to_an_address_our_server_refused(desk):
    """Issue 16 §5: the refused address is marked; the next request's acknowledgement is not
    sent (the server is not asked again), the trail says why, and ТП1's notice says to reach
    the customer another way."""
    desk.sink.refuse(CUSTOMER, MALFORMED)
    desk.write(CUSTOMER, "Не запускается АРМ", "АРМ диспетчера не запускается.")
    desk.run()
    desk.new_mail()
    desk.write(CUSTOMER, "Ещё вопрос", "Не работает отчёт по теплосети.")

    desk.run()

    acks = [r for r in outbox(desk) if r.kind == "ack"]
    assert [r.status for r in acks] == ["failed"]
    assert desk.sink.rcpts.count(CUSTOMER) == 1
    with desk.sessions() as session:
        (skipped,) = session.scalars(select(Event).where(Event.kind == "mail_not_sent")).all()
    assert skipped.request_id == desk.request().id and skipped.details["mail"] == "ack"
    assert MALFORMED in skipped.details["reason"]
    (notice,) = desk.inbox()["tp1@tecon.example"]
    assert "НЕДОСТАВЛЯЕМ" in notice.parsed().get_body(("plain",)).get_content()


def test_a_mail_goes_to_its_other_recipients_when_one_is_refused(desk):
    desk.sink.refuse("nobody@zavod.example", "550 5.1.1 no such user")
    queue(desk, "nobody@zavod.example", CUSTOMER)

    assert send(desk) == 1

    (received,) = desk.sink.wait_for(1)
    assert received.rcpt_tos == [CUSTOMER]
    (sent,) = outbox(desk)
    assert (sent.status, sent.claimed_by) == ("sent", None)
    assert sent.last_error == f"nobody@zavod.example: 550 5.1.1 no such user; sent to {CUSTOMER}"
    with desk.sessions() as session:
        assert session.scalar(select(UndeliverableAddress.address)) == "nobody@zavod.example"


def test_a_temporary_refusal_of_a_recipient_is_retried_for_that_recipient_only(desk):
    desk.sink.refuse("busy@zavod.example", "450 4.2.1 mailbox busy")
    queue(desk, "busy@zavod.example", CUSTOMER)

    assert send(desk) == 1
    (pending,) = outbox(desk)
    assert (pending.status, pending.recipients, pending.attempts) == ("pending", ["busy@zavod.example"], 1)
    desk.sink.refuse("busy@zavod.example", "")  # no longer refused
    desk.clock.advance(seconds=desk.config.smtp.retry_base + 1)

    assert send(desk) == 1
    assert [m.rcpt_tos for m in desk.sink.wait_for(2)] == [[CUSTOMER], ["busy@zavod.example"]]
    with desk.sessions() as session:
        assert session.scalar(select(func.count()).select_from(UndeliverableAddress)) == 0


def test_an_address_no_smtp_command_can_carry_fails_alone(desk):
    queue(desk, CUSTOMER, count=2)
    with desk.sessions.begin() as session:  # a row written before enqueue checked recipients
        first = session.scalars(select(Outbox).order_by(Outbox.id)).first()
        first.recipients = ["bad\r\nRCPT TO:<x@evil.example>@zavod.example"]

    assert send(desk) == 1

    failed, sent = outbox(desk)
    assert failed.status == "failed" and "malformed address" in failed.last_error
    assert sent.status == "sent"
    assert desk.sink.rcpts == [CUSTOMER]


def test_forgetting_an_undeliverable_address_lets_mail_to_it_go_to_the_server_again(
        desk, monkeypatch, capsys):
    desk.sink.refuse(CUSTOMER, MALFORMED)
    queue(desk, CUSTOMER)
    send(desk)
    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)

    assert main(["undeliverable", "list"]) == 0
    assert CUSTOMER in capsys.readouterr().out
    assert main(["undeliverable", "forget", CUSTOMER.upper()]) == 0
    assert main(["undeliverable", "forget", CUSTOMER]) == 1

    desk.sink.refuse(CUSTOMER, "")
    queue(desk, CUSTOMER)
    assert send(desk) == 1
    assert desk.sink.rcpts == [CUSTOMER, CUSTOMER]


def test_a_mail_that_makes_the_sender_fail_does_not_hold_up_the_others(desk, monkeypatch):
    queue(desk, CUSTOMER, count=3)
    first = outbox(desk)[0].id
    wire = SmtpSender.wire

    def broken_for_the_first(conn, outbox_id):  # a bug that only this mail meets
        if outbox_id == first:
            raise RuntimeError("a bug")
        return wire(conn, outbox_id)

    monkeypatch.setattr(SmtpSender, "wire", staticmethod(broken_for_the_first))

    assert send(desk) == 2

    broken = outbox(desk)[0]
    assert (broken.status, broken.attempts, broken.last_error) == ("pending", 1, "cannot send: a bug")
    assert broken.claimed_by is None and broken.next_attempt_at > desk.clock.now()


# ---------------------------------------------------------------- the server is down

def test_an_smtp_outage_puts_the_due_mail_off_in_one_statement_and_says_so_once(desk, caplog):
    port = desk.sink.port
    desk.sink.stop()
    queue(desk, CUSTOMER, count=70)  # more than one claimed batch (50)
    smtp = sender(desk)
    try:
        with caplog.at_level(logging.DEBUG, logger="mailbot"):
            assert asyncio.run(smtp.send_due()) == 0
            assert asyncio.run(smtp.send_due()) == 0  # not before the next attempt is due
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage().split(" (")[0] for r in warnings] == [
            f"SMTP server 127.0.0.1:{port} unreachable"]
        rows = outbox(desk)
        put_off = [r for r in rows if r.last_error]
        assert len(put_off) == 50  # the claimed batch; the others were not claimed
        assert all(r.last_error.startswith(UNREACHABLE) and r.attempts == 0
                   and r.claimed_by is None and r.status == "pending" for r in put_off)

        desk.sink.start(port)
        time.sleep(smtp.wait_time())
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mailbot"):
            assert asyncio.run(smtp.send_due()) == 70  # the backlog at once, not at its own time
        assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
            "SMTP server available again"]
    finally:
        smtp.close()
    assert len({m.peer for m in desk.sink.wait_for(70)}) == 1  # over one connection
    assert {r.status for r in outbox(desk)} == {"sent"}


def test_mail_put_off_by_an_outage_goes_out_with_the_next_successful_connection(desk):
    queue(desk, CUSTOMER, count=3)
    later = MONDAY_MORNING.replace(hour=23)
    with desk.sessions.begin() as session:  # put off by an outage that another daemon saw
        session.execute(update(Outbox).values(next_attempt_at=later,
                                              last_error=UNREACHABLE + "ConnectionRefusedError"))
    queue(desk, CUSTOMER)  # new mail makes a connection

    assert send(desk) == 4


# ---------------------------------------------------------------- claims

def test_a_dead_senders_claims_are_taken_over_at_once(desk):
    queue(desk, CUSTOMER, count=5)
    dead = sender(desk)
    with desk.sessions.kw["bind"].connect() as conn:
        claimed = claim(conn, dead.owner.ensure(), desk.clock.now(), 50)
        conn.commit()
    assert len(claimed) == 5
    live = sender(desk)
    try:
        assert asyncio.run(live.send_due()) == 0  # its owner holds its lock: left to it
        dead.close()  # as when its process dies: the server lets the lock go
        assert asyncio.run(live.send_due()) == 5
    finally:
        live.close()
    assert len(desk.sink.wait_for(5)) == 5


def test_two_daemons_share_the_outbox_without_sending_a_mail_twice(desk):
    desk.sink.delay = 0.005  # the two interleave while they wait for the server
    queue(desk, CUSTOMER, count=120)
    first, second = sender(desk), sender(desk)

    async def both() -> list[int]:
        return await asyncio.gather(first.send_due(), second.send_due())

    try:
        shares = asyncio.run(both())
    finally:
        first.close()
        second.close()
    assert sum(shares) == 120 and min(shares) > 0
    ids = [m.parsed()["Message-ID"] for m in desk.sink.wait_for(120)]
    assert len(set(ids)) == len(ids) == 120


# ---------------------------------------------------------------- several connections

def test_two_connections_send_each_mail_once_and_mail_to_one_address_in_its_order(desk):
    desk.sink.delay = 0.002  # the two connections interleave
    for n in range(5):
        for customer in range(8):
            queue_text(desk, f"c{customer}@zavod.example", f"Ответ {n}")

    assert send(desk) == 40

    received = desk.sink.wait_for(40)
    ids = [m.parsed()["Message-ID"] for m in received]
    assert len(set(ids)) == 40
    assert len({m.peer for m in received}) == 2  # smtp.connections, by default
    for customer in range(8):
        mine = [m for m in received if m.rcpt_tos == [f"c{customer}@zavod.example"]]
        assert [m.parsed()["Subject"] for m in mine] == [f"Ответ {n}" for n in range(5)]
        assert len({m.peer for m in mine}) == 1
    assert {(r.status, r.attempts, r.claimed_by) for r in outbox(desk)} == {("sent", 1, None)}


def test_a_server_that_takes_one_connection_gets_all_the_mail_over_it(desk):
    greeted = []

    async def first_only(server, session, envelope, hostname, responses):
        greeted.append(hostname)
        if len(greeted) > 1:
            return ["421 4.7.0 one connection per client"]
        session.host_name = hostname  # what aiosmtpd's own EHLO does
        return responses

    desk.sink.handle_EHLO = first_only
    for customer in range(6):
        queue_text(desk, f"c{customer}@zavod.example", "Ответ")

    assert send(desk) == 6

    assert len({m.peer for m in desk.sink.wait_for(6)}) == 1
    assert {r.status for r in outbox(desk)} == {"sent"}


def test_a_line_that_starts_with_a_dot_arrives_as_it_was_written(desk):
    text = "Проверьте каталог\n.config\n..и ещё\n.\nконец"
    queue_text(desk, CUSTOMER, "Точки", text)

    assert send(desk) == 1

    (mail,) = desk.sink.wait_for(1)
    assert mail.parsed().get_body(("plain",)).get_content().splitlines() == text.splitlines()


def test_a_stored_mail_with_other_line_ends_goes_out_with_crlf_and_its_dots_kept(desk):
    """Our mail is stored with CRLF line ends; a row written otherwise (by hand, by an older
    version) still goes out as written: every line end CRLF on the wire, a line that is a
    dot not taken for the end of the data."""
    queue_text(desk, CUSTOMER, "Старое письмо")
    raw = (b"From: support@tecon.example\nTo: ivanov@zavod.example\nSubject: old\n"
           b"Message-ID: <old@tecon.example>\n\nline one\n.\n.dot\r\nold mac\rend\n")
    with desk.sessions.begin() as session:
        session.execute(update(Outbox).values(raw=raw))

    assert send(desk) == 1

    (mail,) = desk.sink.wait_for(1)
    assert mail.data.split(b"\r\n\r\n", 1)[1] == b"line one\r\n.\r\n.dot\r\nold mac\r\nend\r\n"


def queue_text(desk: Desk, to: str, subject: str, text: str = "Текст") -> None:
    with desk.sessions.begin() as session:
        enqueue(session, desk.config, Outgoing(kind="relay", to=(to,), automatic=False,
                                               content=Rendered(subject, text, None)),
                MONDAY_MORNING)


# ---------------------------------------------------------------- live mail and a backlog

def test_a_live_mail_is_answered_while_a_long_send_batch_drains(desk):
    """The processor queued live mail (due a minute earlier) and hurried the sender: the
    batch under way stops at its next mail, and the live mail goes before the rest of it."""
    desk.sink.delay = 0.02
    for n in range(50):
        queue_text(desk, f"c{n}@zavod.example", f"Ответ {n}")
    smtp = sender(desk)

    async def backlog_then_live() -> int:
        sending = asyncio.create_task(smtp.send_due())
        while len(desk.sink.messages) < 5:
            await asyncio.sleep(0.01)
        with desk.sessions.begin() as session:
            enqueue(session, desk.config, Outgoing(
                kind="ack", to=("new@zavod.example",), automatic=True,
                content=Rendered("Заявка принята", "Текст", None)), MONDAY_MORNING - timedelta(minutes=1))
        smtp.hurry()
        return await sending

    try:
        assert asyncio.run(backlog_then_live()) == 51
    finally:
        smtp.close()
    received = [m.rcpt_tos for m in desk.sink.wait_for(51)]
    assert received.index(["new@zavod.example"]) < 15  # not behind the batch's 45 others
    assert {r.status for r in outbox(desk)} == {"sent"}
    assert len({m.parsed()["Message-ID"] for m in desk.sink.messages}) == 51
