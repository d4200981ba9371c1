"""What we send is always well-formed (issue 15 §5), whatever the customer's mail holds.

Each test is an attack mail through the real pipeline (Dovecot, PostgreSQL, the
SMTP sink, whose server refuses a line over 998 octets with ``500 Line too long``
as real servers do): the answers still go out, well-formed, and what staff see
carries no control or bidi characters.
"""
from __future__ import annotations

import asyncio
import base64
import secrets
import string
from datetime import datetime, timezone
from email.utils import make_msgid

import pytest
from sqlalchemy import func, select

from mailbot.cli.main import main
from mailbot.clock import FrozenClock
from mailbot.config import load_config, with_overrides
from mailbot.outbox import InvalidRecipient, Outgoing, enqueue
from mailbot.register import db
from mailbot.register.models import Event, Message, Outbox, Request
from mailbot.render import Rendered
from mailbot.transport.smtp import SmtpSender
from tests.mailflow import Desk, body
from tests.servers import Received

CUSTOMER = "ivanov@zavod.example"
TP1 = "tp1@tecon.example"
RLO, C1 = "\u202e", "\u0085\u009b\u0090"  # right-to-left override; NEL, CSI, DCS
HIDDEN = (RLO, *C1, "\u202d", "\u2066", "\u200f", "\x1b")
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)


def long_id(length: int = 3000) -> str:
    """A Message-ID of ``length`` characters that no compression shortens."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length - 13)) + "@zavod.example"


def encoded(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def mail(desk: Desk, *, subject: str, text: str, message_id: str, name: str = "",
         thread: tuple[str, ...] = (), file: tuple[str, bytes] | None = None) -> None:
    """Put a hand-written message into the bot's INBOX (headers exactly as given, unfolded)."""
    head = [f"From: {encoded(name)} <{CUSTOMER}>" if name else f"From: {CUSTOMER}",
            f"To: {desk.mailbox.user}", f"Subject: {encoded(subject)}",
            f"Message-ID: <{message_id}>", "Date: Wed, 25 Nov 2026 10:00:00 +0300",
            "MIME-Version: 1.0"]
    if thread:
        head += [f"In-Reply-To: <{thread[-1]}>", "References: " + " ".join(f"<{t}>" for t in thread)]
    text_part = ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64", "",
                 base64.b64encode(text.encode()).decode()]
    if file is None:
        lines = head + text_part
    else:
        filename, data = file
        lines = head + ['Content-Type: multipart/mixed; boundary="b1"', "", "--b1", *text_part,
                        "--b1", "Content-Type: application/octet-stream",
                        "Content-Transfer-Encoding: base64",
                        "Content-Disposition: attachment; filename*=utf-8''"
                        + "".join(f"%{b:02X}" for b in filename.encode()),
                        "", base64.b64encode(data).decode(), "--b1--"]
    desk.dovecot.append(desk.mailbox.user, ("\r\n".join(lines) + "\r\n").encode())


def well_formed(message: Received) -> None:
    """Every line within RFC 5322's 998 octets, CRLF line ends, a header block that parses."""
    lines = message.data.split(b"\r\n")
    assert max(map(len, lines)) <= 998
    assert b"\n" not in message.data.replace(b"\r\n", b"")
    parsed = message.parsed()
    assert not [d for d in parsed.defects], parsed.defects
    assert all(not h.defects for h in (parsed[name] for name in parsed.keys())), \
        [(name, parsed[name].defects) for name in parsed.keys() if parsed[name].defects]


def nothing_stuck(desk: Desk) -> None:
    with desk.sessions() as session:
        assert session.scalars(select(Outbox.status).where(Outbox.status != "sent")).all() == []


def test_a_3000_character_message_id_does_not_stop_answers_to_the_customer(desk):
    staff = desk.add_staff("sidorov", years=7)
    first, second = long_id(), long_id()
    mail(desk, subject="Не работает опрос", text="Опрос счётчиков остановился.", message_id=first)
    desk.run()

    ack = desk.mail_to(CUSTOMER)  # the acknowledgement went out through the SMTP server
    well_formed(ack)
    assert "In-Reply-To" not in ack.parsed() and "References" not in ack.parsed()
    assert desk.request().thread_message_id is None  # nothing that long is kept as an id
    ack_id = ack.parsed()["Message-ID"].strip("<>")

    # The customer answers the acknowledgement, again with a huge Message-ID of their own:
    # the reply still finds its request by our acknowledgement's id.
    mail(desk, subject=f"Re: {ack.parsed()['Subject']}", text="Дополняю: с утра.",
         message_id=second, thread=(first, ack_id))
    desk.run()
    notice = desk.mail_to(staff)
    well_formed(notice)
    assert "Дополняю" in body(notice)

    desk.reply(notice, staff, "Перезапустите службу опроса.")
    desk.run()
    answer = desk.mail_to(CUSTOMER)
    well_formed(answer)
    assert "Перезапустите" in body(answer)
    assert answer.parsed()["References"].split() == [f"<{ack_id}>"]  # threaded as well as can be
    assert len(desk.sessions().scalars(select(Request)).all()) == 1
    nothing_stuck(desk)


def test_hostile_thread_headers_are_left_out_of_our_answers(desk):
    """Ids that are not msg-id shaped (no '@', spaces, non-ASCII) never reach our headers."""
    mail(desk, subject="Вопрос", text="Как настроить?", message_id="ид-письма@завод.рф",
         thread=("no-at-sign", "a" * 990 + "@x", "ok-1@zavod.example"))
    desk.run()
    ack = desk.mail_to(CUSTOMER)
    well_formed(ack)
    parsed = ack.parsed()
    assert parsed["References"].split() == ["<ok-1@zavod.example>"]
    assert "In-Reply-To" not in parsed  # the mail's own id cannot be written in ASCII
    nothing_stuck(desk)


def test_bidi_and_c1_characters_never_reach_staff_the_cli_or_our_headers(desk, monkeypatch, capsys):
    """`invoice<RLO>gpj.exe` shows as `invoiceexe.jpg`; C1 controls drive terminals."""
    subject = f"Счёт {RLO}gpj.exe{C1} оплачен\u202d\u2066\u200f"
    mail(desk, subject=subject, text="Проверьте счёт во вложении.", message_id=make_msgid()[1:-1],
         name=f"Иван{RLO}{C1} Иванов", file=(f"invoice{RLO}gpj.exe{C1}", b"MZ"))
    desk.run()

    sent = desk.inbox()
    (notice,) = sent[TP1]
    (ack,) = sent[CUSTOMER]
    for message in (notice, ack):
        well_formed(message)
        text = message.data.decode("utf-8")  # the headers, as sent
        parsed = message.parsed()
        shown = [str(parsed[name]) for name in parsed.keys()] + [body(message)] + \
            [a.get_filename() or "" for a in parsed.iter_attachments()]
        assert not [s for s in shown + [text] if any(c in s for c in HIDDEN)], shown
    assert "Счёт gpj.exe оплачен" in notice.parsed()["Subject"]
    (attachment,) = notice.parsed().iter_attachments()
    assert attachment.get_filename() == "invoicegpj.exe" and attachment.get_content() == b"MZ"
    assert "invoicegpj.exe" in body(notice)

    request = desk.request()
    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    for command in (["requests", "list"], ["requests", "show", request.number],
                    ["requests", "files", request.number]):
        assert main(command) == 0
        out = capsys.readouterr().out
        assert "gpj.exe" in out and not any(c in out for c in HIDDEN), (command, out)


def test_rows_stored_before_the_cleaning_are_shown_clean(desk, monkeypatch, capsys):
    """A subject and name kept with control characters by an older version are cleaned on the
    way out: in the staff notification, in our headers and on the terminal."""
    staff = desk.add_staff("sidorov", years=7)
    desk.write(CUSTOMER, "Вопрос", "Как настроить?")
    desk.run()
    desk.new_mail()
    request = desk.request()
    with desk.sessions.begin() as session:
        row = session.get(Request, request.id)
        row.subject, row.requester_name = f"Счёт {RLO}gpj.exe{C1}\x1b[2J", f"Иван{RLO}{C1}"

    desk.write(CUSTOMER, f"Re: [{request.number}] Вопрос", "Ещё вопрос.")
    desk.run()
    notice = desk.mail_to(staff)
    well_formed(notice)
    text = str(notice.parsed()["Subject"]) + body(notice)
    assert "Счёт gpj.exe" in text and not any(c in text for c in HIDDEN)

    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    for command in (["requests", "list"], ["requests", "show", request.number]):
        assert main(command) == 0
        out = capsys.readouterr().out
        assert "gpj.exe" in out and not any(c in out for c in HIDDEN), (command, out)


def test_the_outbox_refuses_a_recipient_that_is_not_one_address(desk):
    """A requester address stored before addresses were checked (`a@b, bcc:c@d`) gets no
    mail: the outbox writes no row, the trail says why, and the rest of the step is done."""
    staff = desk.add_staff("sidorov", years=7)
    desk.write(CUSTOMER, "Вопрос", "Как настроить?")
    desk.run()
    notice = desk.mail_to(staff)
    smuggled = f"{CUSTOMER}, bcc:victim@example.test"
    with desk.sessions.begin() as session:
        session.get(Request, desk.request().id).requester_email = smuggled

    desk.reply(notice, staff, "Откройте меню Сервис.")
    desk.run()

    assert desk.new_mail() == []
    with desk.sessions() as session:
        assert session.scalars(select(Outbox.recipients).where(Outbox.kind == "relay")).all() == []
        (event,) = session.scalars(select(Event).where(Event.kind == "mail_not_sent")).all()
        assert event.details["to"] == [smuggled] and event.details["mail"] == "relay"
    assert desk.request().status == "awaiting_customer"  # the answer itself is recorded


# ---------------------------------------------------------------- the outbox, the last guard

BAD_RECIPIENTS = (f"{CUSTOMER}, victim@example.test", f"{CUSTOMER} bcc:victim@example.test",
                  "Иван <ivanov@zavod.example>", "ivanov@zavod.example\r\nBcc: victim@example.test",
                  "no-at-sign", "", "a" * 250 + "@zavod.example", "a@b@zavod.example")


def test_enqueue_writes_no_row_for_a_recipient_that_is_not_one_plain_address(database_url):
    config = with_overrides(load_config(None, environ={}), database={"url": database_url})
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    sessions = db.make_sessionmaker(engine)
    content = Rendered("Ответ", "текст", None)
    with sessions.begin() as session:
        for bad in BAD_RECIPIENTS:
            with pytest.raises(InvalidRecipient):
                enqueue(session, config, Outgoing(kind="relay", to=(bad,), content=content), NOW)
            with pytest.raises(InvalidRecipient):
                enqueue(session, config, Outgoing(kind="relay", to=(CUSTOMER, bad), content=content), NOW)
        with pytest.raises(InvalidRecipient):
            enqueue(session, config, Outgoing(kind="relay", to=(), content=content), NOW)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0
        assert session.scalar(select(func.count()).select_from(Message)) == 0
    engine.dispose()


def test_mail_to_an_internationalised_address_goes_out_with_smtputf8(database_url, smtp_sink):
    config = with_overrides(load_config(None, environ={}), database={"url": database_url},
                            smtp={"host": smtp_sink.host, "port": smtp_sink.port})
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    sessions = db.make_sessionmaker(engine)
    with sessions.begin() as session:
        for to in ("иван@завод.рф", "info@завод.рф"):
            enqueue(session, config, Outgoing(kind="relay", to=(to,), automatic=False,
                                              content=Rendered("Ответ", "текст", None)), NOW)
    assert asyncio.run(SmtpSender(config.smtp, sessions, FrozenClock(NOW)).send_due()) == 2
    domain = "завод.рф".encode("idna").decode()
    first, second = smtp_sink.wait_for(2)
    assert first.rcpt_tos == [f"иван@{domain}"] and second.rcpt_tos == [f"info@{domain}"]
    assert max(len(line) for m in (first, second) for line in m.data.split(b"\r\n")) <= 998
    engine.dispose()


def test_staff_cannot_type_a_second_address_into_the_register(desk, monkeypatch, capsys):
    """The CLI's ways in (a request taken by phone, a staff member) check the address too."""
    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    smuggled = f"{CUSTOMER}, bcc:victim@example.test"
    assert main(["requests", "new", "--channel", "phone", "--text", "Не работает опрос",
                 "--email", smuggled]) == 64
    assert main(["staff", "add", "petrov", "--name", "Петров", "--email", smuggled,
                 "--tier", "tp1"]) == 64
    assert capsys.readouterr().err.count("not one plain e-mail address") == 2
    with desk.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Request)) == 0
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0
