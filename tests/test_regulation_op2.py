"""ОП2 of the regulation (§3): «ОП2 требует обязательного подтверждения доставки».

By mail alone: the customer, the staff and the bot exchange real mail through
Dovecot and the SMTP sink; the clock is the desk's, the timers those of the
daemon. Files sent to a customer become a delivery that asks for a read receipt
and waits for a confirmation (a receipt, a reply, a staff member's word); a
bounce fails it; silence brings reminders, then the assignee; closing needs the
confirmation or a recorded override. Files asked of the customer are awaited and
their arrival noted for the assignee.
"""
from __future__ import annotations

from datetime import timedelta
from email.utils import make_msgid

import pytest
from sqlalchemy import select

from mailbot.config import ConfigError, DeliveryConfig, load_config, with_overrides
from mailbot.daemon import Daemon
from mailbot.parsers.commands import parse_commands
from mailbot.register.models import Delivery, Event, FileRequest, Message
from mailbot.rules import Confirmation
from mailbot.rules.confirmation import detect_confirmation
from mailbot.scheduler import run_timers
from tests.mailflow import Desk, body, mx_trace
from tests.servers import Received
from tests.test_mail_hygiene import bounce_of

CUSTOMER = "ivanov@zavod.example"
TP1 = "tp1@tecon.example"
PATCH = ("patch-2.4.1.zip", b"PK\x03\x04 patch 2.4.1")


# ---------------------------------------------------------------- helpers

def receipt(desk: Desk, of: Received, sender: str = CUSTOMER, disposition: str = "displayed",
            final_recipient: str | None = None) -> None:
    """The customer's mail program answers our mail's read-receipt request (RFC 8098)."""
    original = of.parsed()["Message-ID"]
    raw = f"""From: Иванов Иван <{sender}>
To: {desk.mailbox.user}
Subject: =?utf-8?b?0J/RgNC+0YfQuNGC0LDQvdC+?=: {of.parsed()["Subject"].encode("ascii", "replace").decode()}
Message-ID: {make_msgid(domain="zavod.example")}
Date: Wed, 25 Nov 2026 10:30:00 +0300
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

The message was {disposition}.

--b1
Content-Type: message/disposition-notification

Reporting-UA: zavod.example; Thunderbird 115
Final-Recipient: rfc822;{final_recipient or sender}
Original-Message-ID: {original}
Disposition: manual-action/MDN-sent-manually; {disposition}

--b1--
""".replace("\n", "\r\n").encode()
    desk.dovecot.append(desk.mailbox.user, mx_trace(sender, "pass") + raw)


def op2_request(desk: Desk) -> tuple[str, Received]:
    """A customer asks for a patch (ОП2); the assignee and the notification they got."""
    staff = desk.add_staff("sidorov", years=3)
    desk.write(CUSTOMER, "Нужен патч", "Пришлите, пожалуйста, патч 2.4.1 для АРМ.")
    desk.run()
    assert desk.request().level == 2
    return staff, desk.mail_to(staff)


def files_sent(desk: Desk, staff: str, notice: Received, command: str = "Патч во вложении.",
               files: tuple = (PATCH,)) -> Received:
    """The assignee answers with files; the mail the customer gets."""
    desk.reply(notice, staff, command, attachments=files)
    desk.run()
    return desk.mail_to(CUSTOMER)


def deliveries(desk: Desk) -> list[Delivery]:
    with desk.sessions() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def file_requests(desk: Desk) -> list[FileRequest]:
    with desk.sessions() as session:
        return list(session.scalars(select(FileRequest).order_by(FileRequest.id)))


def timeline(desk: Desk) -> list[str]:
    with desk.sessions() as session:
        return [e.kind for e in session.scalars(
            select(Event).where(Event.request_id == desk.request().id).order_by(Event.id))]


def timers(desk: Desk) -> list[str]:
    """One pass of the daemon's one-minute timers; then what they queued goes out."""
    touched = run_timers(Daemon(desk.config, desk.sessions, desk.clock))
    desk.run()
    return touched


# ---------------------------------------------------------------- sending files

def test_files_sent_ask_for_a_read_receipt_and_a_confirmation_and_are_a_delivery(desk):
    """§3: files sent to the customer are a delivery waiting for its confirmation."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice).parsed()

    assert sent["Disposition-Notification-To"] == desk.mailbox.user  # RFC 8098
    text = sent.get_body(("plain",)).get_content()
    assert "подтвердите получение файлов" in text and "patch-2.4.1.zip" in text
    assert "подтвердите получение файлов" in sent.get_body(("html",)).get_content()
    (delivery,) = deliveries(desk)
    assert (delivery.status, delivery.recipient, delivery.files) == ("sent", CUSTOMER, ["patch-2.4.1.zip"])
    with desk.sessions() as session:
        assert session.scalar(select(Message.message_id).join(Message.outbox).where(
            Message.outbox_id == delivery.outbox_id)) == sent["Message-ID"].strip("<>")
    assert "files_sent" in timeline(desk)
    assert desk.request().status == "awaiting_customer"


def test_op2_delivery_confirmed_by_a_read_receipt_closes_the_request(desk):
    """§3: "получение подтверждения о приеме/доставке", then "закрытие запроса": the customer's
    mail program reports the mail displayed; the delivery is confirmed, the request closed."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    desk.clock.advance(minutes=30)
    receipt(desk, sent)
    desk.run()

    (delivery,) = deliveries(desk)
    assert (delivery.status, delivery.confirmed_by, delivery.settled_by) == ("confirmed", "mdn", CUSTOMER)
    assert delivery.confirmed_at == desk.clock.now()
    with desk.sessions() as session:
        assert session.get(Message, delivery.settled_message_id).kind == "mdn"
    assert desk.request().status == "closed"
    mail = desk.inbox()
    assert "получение файлов подтверждено" in body(mail[CUSTOMER][0])
    assert "подтверждена, запрос закрыт" in mail[staff][0].parsed()["Subject"]
    kinds = timeline(desk)
    assert kinds[kinds.index("read_receipt"):][:3] == ["read_receipt", "delivery_confirmed", "status"]


def test_op2_delivery_confirmed_by_the_customers_reply(desk):
    """§3: `#файлы` sends the files with the standard text; "дистрибутив скачали" confirms."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice, "#файлы дистрибутив 3.1\nУстановите по инструкции.",
                      files=(("setup-3.1.exe", b"MZ setup"), ("readme.pdf", b"%PDF readme")))
    text = body(sent)
    assert "Направляем вам дистрибутив 3.1" in text and "Установите по инструкции." in text
    assert "setup-3.1.exe" in text and "readme.pdf" in text

    desk.reply(sent, CUSTOMER, "Дистрибутив скачали, всё на месте.")
    desk.run()
    (delivery,) = deliveries(desk)
    assert (delivery.status, delivery.confirmed_by, delivery.settled_by) == ("confirmed", "reply", CUSTOMER)
    assert delivery.files == ["setup-3.1.exe", "readme.pdf"]
    assert desk.request().status == "closed"
    mail = desk.inbox()
    assert "получение файлов подтверждено" in body(mail[CUSTOMER][0])
    assert staff in mail


def test_op2_delivery_failed_by_a_bounce_tells_the_assignee_and_blocks_closing(desk):
    """A bounce of the mail with the files fails the delivery and tells the assignee at once; the
    request cannot simply be closed (the regulation wants the delivery confirmed)."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    desk.dovecot.append(desk.mailbox.user, bounce_of(sent.parsed()["Message-ID"].strip("<>"), CUSTOMER))
    desk.run()

    (delivery,) = deliveries(desk)
    assert delivery.status == "failed" and "5.1.1" in delivery.failure
    assert delivery.settled_by == "mailer-daemon"
    alert = desk.mail_to(staff)
    assert "не доставлено" in alert.parsed()["Subject"]
    assert "patch-2.4.1.zip" in body(alert) and "#доставлено" in body(alert)
    assert "delivery_failed" in timeline(desk)

    desk.reply(alert, staff, "#закрыть")
    desk.run()
    error = desk.mail_to(staff)
    assert "Команды не выполнены" in error.parsed()["Subject"]
    assert "получение отправленных файлов не подтверждено" in body(error) and "без подтверждения" in body(error)
    assert desk.request().status != "closed"

    # sent again to a working address and confirmed: the failure is made good, closing is allowed
    resent = files_sent(desk, staff, alert, "Отправляем патч повторно.")
    receipt(desk, resent)
    desk.run()
    assert [d.status for d in deliveries(desk)] == ["failed", "confirmed"]
    assert desk.request().status == "closed"


def test_op2_delivery_refused_by_our_smtp_server_fails_at_once(desk):
    """Our own SMTP server refuses the customer's address for good while sending the files."""
    staff, notice = op2_request(desk)
    desk.sink.refuse(CUSTOMER, "550 5.1.1 no such user")
    desk.reply(notice, staff, "Патч во вложении.", attachments=(PATCH,))
    desk.run()
    (delivery,) = deliveries(desk)
    assert (delivery.status, delivery.settled_by) == ("failed", "smtp") and "5.1.1" in delivery.failure
    alert = desk.mail_to(staff)
    assert "не доставлено" in alert.parsed()["Subject"] and "patch-2.4.1.zip" in body(alert)


def test_op2_unconfirmed_files_are_reminded_then_the_assignee_told_and_staff_override_closes(desk):
    """Silence: `delivery.max_reminders` (2) reminders to the customer `remind_after_hours` (8)
    working hours apart, in working hours; then the assignee. Staff close with a reason."""
    staff, notice = op2_request(desk)
    files_sent(desk, staff, notice)  # Wednesday 10:00 Moscow time
    (delivery,) = deliveries(desk)
    sent_at = delivery.created_at

    desk.clock.set(sent_at + timedelta(hours=7, minutes=59))
    assert timers(desk) == [] and desk.new_mail() == []
    desk.clock.set(sent_at + timedelta(hours=8))  # Wednesday 18:00: 8 working hours
    assert timers(desk) == [desk.request().number]
    first = desk.mail_to(CUSTOMER)
    assert "подтвердите получение" in body(first) and "patch-2.4.1.zip" in body(first)
    assert first.parsed()["Auto-Submitted"] and desk.request().number in first.parsed()["Subject"]

    desk.clock.advance(hours=8)  # Thursday 02:00: the night is no working time
    assert timers(desk) == [] and desk.new_mail() == []
    desk.clock.advance(hours=15)  # Thursday 17:00: 8 working hours since 18:00 Wednesday
    timers(desk)
    assert "напоминание 2" in body(desk.mail_to(CUSTOMER))
    desk.clock.advance(days=1)  # Friday 17:00: the reminders are used up; the assignee is told
    timers(desk)
    told = desk.mail_to(staff)
    assert "не подтверждено" in told.parsed()["Subject"] and "#доставлено" in body(told)
    desk.clock.advance(days=3)
    assert timers(desk) == [] and desk.new_mail() == []  # told once
    (delivery,) = deliveries(desk)
    assert (delivery.status, delivery.reminders) == ("sent", 2) and delivery.staff_told_at
    assert timeline(desk).count("delivery_reminder") == 2 and "delivery_unconfirmed" in timeline(desk)

    desk.reply(told, staff, "#закрыть")
    desk.run()
    assert "получение отправленных файлов не подтверждено" in body(desk.mail_to(staff))
    desk.reply(told, staff, "#закрыть без подтверждения: клиент не отвечает, файлы переданы на флешке")
    desk.run()
    request = desk.request()
    assert request.status == "closed"
    (delivery,) = deliveries(desk)
    assert (delivery.status, delivery.settled_by) == ("waived", "sidorov")
    assert delivery.note == "клиент не отвечает, файлы переданы на флешке"
    with desk.sessions() as session:
        closing = session.scalars(select(Event).where(Event.kind == "status")
                                  .order_by(Event.id.desc())).first()
    assert closing.to_status == "closed"
    assert closing.details["override"] == "клиент не отвечает, файлы переданы на флешке"
    assert "флешке" not in body(desk.mail_to(CUSTOMER))  # the reason is internal


def test_staff_confirm_delivery_given_by_phone_and_then_may_close(desk):
    """`#доставлено по телефону …`: the confirmation says how, when and by whom."""
    staff, notice = op2_request(desk)
    files_sent(desk, staff, notice)
    desk.reply(notice, staff, "#доставлено по телефону 25.11 в 15:00, Иванов подтвердил\n#закрыть")
    desk.run()

    (delivery,) = deliveries(desk)
    assert (delivery.status, delivery.confirmed_by, delivery.settled_by) == ("confirmed", "staff", "sidorov")
    assert delivery.note == "по телефону 25.11 в 15:00, Иванов подтвердил"
    assert delivery.settled_message_id is not None
    assert desk.request().status == "closed"


def test_a_confirmation_of_nothing_is_refused(desk):
    staff, notice = op2_request(desk)
    desk.reply(notice, staff, "#доставлено по телефону")
    desk.run()
    assert "по запросу нет отправленных файлов, ждущих подтверждения" in body(desk.mail_to(staff))


def test_files_command_without_files_is_refused(desk):
    staff, notice = op2_request(desk)
    desk.reply(notice, staff, "#файлы\nВот патч.")
    desk.run()
    (error,) = desk.new_mail()
    assert error.rcpt_tos == [staff] and "приложите файлы к письму" in body(error)


def test_the_customer_says_the_files_did_not_arrive(desk):
    """"Спасибо, но архив не открывается": the delivery fails, the request opens again and the
    assignee is told at once (the thanks do not close it)."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    desk.reply(sent, CUSTOMER, "Спасибо, но архив не открывается.")
    desk.run()

    (delivery,) = deliveries(desk)
    assert delivery.status == "failed" and "архив не открывается" in delivery.failure
    assert desk.request().status == "open"
    told = desk.mail_to(staff)
    assert "ФАЙЛЫ НЕ ПОЛУЧЕНЫ" in told.parsed()["Subject"] and "patch-2.4.1.zip" in body(told)


def test_a_receipt_with_a_new_question_closes_the_request_and_opens_one_for_the_question(desk):
    """§3 and issue 16 §2: the receipt confirms the delivery, so the ОП2 request closes; the
    question in the same reply becomes a request of its own, linked, and reaches a person."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    first = desk.request().number
    desk.reply(sent, CUSTOMER, "Файлы получили. А как установить патч на резервный сервер?")
    desk.run()
    assert deliveries(desk)[0].status == "confirmed"
    assert desk.request(first).status == "closed"
    new = desk.request()
    assert new.number != first and new.status == "open" and new.follows_id == desk.request(first).id
    assert "резервный сервер" in new.subject
    mail = desk.inbox()
    (ack,) = mail[CUSTOMER]
    assert new.number in ack.parsed()["Subject"] and first in body(ack)
    assert any("резервный сервер" in body(m) and new.number in m.parsed()["Subject"]
               for m in mail[staff])


def test_read_receipts_that_do_not_show_the_files_were_seen(desk):
    """'processed' (handled by software, never shown) confirms nothing; 'deleted' fails the
    delivery and tells the assignee."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    receipt(desk, sent, disposition="processed")
    desk.run()
    assert deliveries(desk)[0].status == "sent" and desk.new_mail() == []
    receipt(desk, sent, disposition="deleted")
    desk.run()
    assert deliveries(desk)[0].status == "failed"
    assert "НЕ ДОСТАВЛЕНЫ" in desk.mail_to(staff).parsed()["Subject"]


def test_files_sent_on_an_op1_request_make_it_op2(desk):
    """Sending files is ОП2 work (§3): the request's level follows, and it no longer closes by
    silence (ОП1's quiet period)."""
    staff = desk.add_staff("sidorov", years=3)
    desk.write(CUSTOMER, "Настройка АРМ", "Как настроить АРМ диспетчера?")
    desk.run()
    assert desk.request().level == 1
    files_sent(desk, staff, desk.mail_to(staff), "Инструкция во вложении.",
               files=(("manual.pdf", b"%PDF manual"),))
    assert desk.request().level == 2
    desk.clock.advance(days=10)
    timers(desk)
    assert desk.request().status == "awaiting_customer"


# ---------------------------------------------------------------- files asked of the customer

def test_files_requested_from_the_customer_are_awaited_and_their_arrival_noted(desk):
    """§3 "запрос файлов диагностики (лог-файлы), скриншоты": the request waits for them; their
    arrival goes to the assignee with the files."""
    staff = desk.add_staff("sidorov", years=3)
    desk.write(CUSTOMER, "Настройка отчёта", "Как настроить отчёт за месяц? Он выходит пустым.")
    desk.run()
    assert desk.request().level == 1
    desk.reply(desk.mail_to(staff), staff, "#запросить логи сервера, скриншот ошибки\n"
               "Логи лежат в папке C:\\Tecon\\Logs.")
    desk.run()
    ask = desk.mail_to(CUSTOMER)
    assert "пришлите, пожалуйста: логи сервера, скриншот ошибки" in body(ask)
    assert "C:\\Tecon\\Logs" in body(ask)
    (asked,) = file_requests(desk)
    assert (asked.status, asked.asked, asked.asked_by) == ("waiting", "логи сервера, скриншот ошибки", "sidorov")
    request = desk.request()
    assert request.status == "awaiting_customer" and request.level == 2

    desk.reply(ask, CUSTOMER, "Логи во вложении, спасибо.", attachments=(("server.log", b"ERROR 42\n"),))
    desk.run()
    (asked,) = file_requests(desk)
    assert asked.status == "received" and asked.received_message_id is not None
    assert desk.request().status == "open"  # the assignee's turn; the thanks close nothing
    told = desk.mail_to(staff)
    assert "ФАЙЛЫ ПОЛУЧЕНЫ" in told.parsed()["Subject"]
    assert "логи сервера, скриншот ошибки" in body(told)
    assert [a.get_filename() for a in told.parsed().iter_attachments()] == ["server.log"]
    assert "files_received" in timeline(desk)


def test_requested_files_not_sent_are_reminded_then_the_assignee_told(desk):
    staff = desk.add_staff("sidorov", years=3)
    desk.write(CUSTOMER, "Настройка отчёта", "Как настроить отчёт за месяц?")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "#запросить логи")
    desk.run()
    desk.new_mail()
    desk.config = with_overrides(desk.config, delivery={"remind_after_hours": 1, "max_reminders": 1})
    desk.clock.advance(hours=1)
    timers(desk)
    assert "ждём от вас: логи" in body(desk.mail_to(CUSTOMER))
    desk.clock.advance(hours=1)
    timers(desk)
    assert "не прислал запрошенные файлы" in desk.mail_to(staff).parsed()["Subject"]
    assert file_requests(desk)[0].status == "waiting"


def test_closing_cancels_files_still_awaited(desk):
    staff = desk.add_staff("sidorov", years=3)
    desk.write(CUSTOMER, "Настройка отчёта", "Как настроить отчёт за месяц?")
    desk.run()
    notice = desk.mail_to(staff)
    desk.reply(notice, staff, "#запросить скриншот")
    desk.run()
    desk.reply(notice, staff, "#закрыть\nКлиент сообщил по телефону, что отчёт сформировался.")
    desk.run()
    assert desk.request().status == "closed"
    assert file_requests(desk)[0].status == "cancelled"


def test_a_reply_that_only_quotes_our_mail_says_nothing_about_the_files(desk):
    """Our text ("если файлы не пришли…") quoted back with no words of the customer's own is
    neither a confirmation nor a complaint."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    desk.reply(sent, CUSTOMER, "")
    desk.run()
    assert deliveries(desk)[0].status == "sent"
    assert desk.request().status == "open"  # the reply goes to the assignee as any other


# ---------------------------------------------------------------- the command line

def cli(desk: Desk, monkeypatch, *argv: str) -> int:
    from mailbot.cli.main import main

    for key, value in {"DATABASE_URL": desk.config.database.url,
                       "SUPPORT_ADDRESS": desk.mailbox.user}.items():
        monkeypatch.setenv(f"MAILBOT_{key}", value)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    monkeypatch.setattr("mailbot.cli.main.Clock", lambda: desk.clock)  # the desk's time
    return main(list(argv))


def test_files_sent_from_the_command_line_are_a_delivery_too(desk, monkeypatch, tmp_path, capsys):
    """`mailbot requests send-files NUMBER FILE… --as LOGIN`: the same mail as `#файлы`, the
    files kept in a stored mail of the staff member's (so `requests files` finds them)."""
    staff, _ = op2_request(desk)
    number = desk.request().number
    patch = tmp_path / "patch-2.4.1.zip"
    patch.write_bytes(PATCH[1])
    assert cli(desk, monkeypatch, "requests", "send-files", number, str(patch), "--as", "sidorov",
               "--text", "Патч для АРМ диспетчера.") == 0
    assert "awaiting confirmation of receipt" in capsys.readouterr().out
    desk.run()

    sent = desk.mail_to(CUSTOMER).parsed()
    assert sent["Disposition-Notification-To"] == desk.mailbox.user
    assert "Патч для АРМ диспетчера." in sent.get_body(("plain",)).get_content()
    (attachment,) = sent.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content()) == PATCH
    assert deliveries(desk)[0].files == ["patch-2.4.1.zip"]
    assert cli(desk, monkeypatch, "requests", "files", number) == 0
    assert "patch-2.4.1.zip" in capsys.readouterr().out

    assert cli(desk, monkeypatch, "requests", "command", number, "--as", "sidorov", "#закрыть") == 64
    assert "получение отправленных файлов не подтверждено" in capsys.readouterr().err
    assert cli(desk, monkeypatch, "requests", "command", number, "--as", "sidorov",
               "#доставлено по телефону, Иванов И. И.") == 0
    assert cli(desk, monkeypatch, "requests", "show", number) == 0
    shown = capsys.readouterr().out
    assert "patch-2.4.1.zip" in shown and "confirmed by staff" in shown and "по телефону" in shown
    assert "delivery_confirmed" in shown


def test_send_files_from_the_command_line_checks_what_it_is_given(desk, monkeypatch, tmp_path, capsys):
    staff, _ = op2_request(desk)
    number = desk.request().number
    assert cli(desk, monkeypatch, "requests", "send-files", number, str(tmp_path / "missing.zip"),
               "--as", "sidorov") == 64
    assert "missing.zip" in capsys.readouterr().err
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2048)
    monkeypatch.setenv("MAILBOT_LIMITS_MAX_ATTACHMENT_BYTES", "1024")
    assert cli(desk, monkeypatch, "requests", "send-files", number, str(big), "--as", "sidorov") == 64
    assert "not sent" in capsys.readouterr().err
    assert deliveries(desk) == []


def test_staff_override_and_file_requests_from_the_command_line(desk, monkeypatch, capsys):
    staff, notice = op2_request(desk)
    files_sent(desk, staff, notice)
    number = desk.request().number
    assert cli(desk, monkeypatch, "requests", "command", number, "--as", "sidorov",
               "#запросить скриншот окна установки", "Пришлите, как только сможете.") == 0
    assert file_requests(desk)[0].asked == "скриншот окна установки"
    assert cli(desk, monkeypatch, "requests", "command", number, "--as", "sidorov",
               "#закрыть без подтверждения: клиент сообщил, что патч установлен") == 0
    assert desk.request().status == "closed"
    assert deliveries(desk)[0].status == "waived" and file_requests(desk)[0].status == "cancelled"


# ---------------------------------------------------------------- trust

def test_a_stranger_cannot_confirm_a_delivery_with_a_forged_read_receipt(desk):
    """An attacker who learnt the Message-ID of our mail sends a receipt 'displayed' from his own
    address, naming the customer as the final recipient: nothing is confirmed, nothing closed,
    and the assignee is told."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    receipt(desk, sent, sender="attacker@evil.example", final_recipient=CUSTOMER)
    desk.run()

    (delivery,) = deliveries(desk)
    assert delivery.status == "sent" and delivery.confirmed_at is None
    assert desk.request().status == "awaiting_customer"
    mail = desk.inbox()
    (told,) = mail.pop(staff)
    assert "постороннего отправителя" in told.parsed()["Subject"]
    assert "attacker@evil.example" in body(told)
    assert not mail  # neither the customer nor the attacker gets anything
    assert "read_receipt_ignored" in timeline(desk)


def test_a_stranger_cannot_confirm_receipt_of_someone_elses_files(desk):
    """"Файлы получили" from an address that is neither the requester nor a registered contact of
    the organisation, in the thread: kept as a note, the delivery stays unconfirmed."""
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    desk.reply(sent, "someone@gmail.example", "Файлы получили, спасибо, можно закрывать.")
    desk.run()
    assert deliveries(desk)[0].status == "sent"
    assert desk.request().status == "awaiting_customer"
    mail = desk.inbox()
    assert "постороннего отправителя" in mail.pop(staff)[0].parsed()["Subject"]
    assert not mail


def test_a_registered_colleague_may_confirm_receipt_for_the_requester(desk):
    desk.load_crm("organization;contact_name;contact_email\n"
                  "ООО «Завод»;Петрова Анна Сергеевна;petrova@zavod.example\n")
    staff, notice = op2_request(desk)
    sent = files_sent(desk, staff, notice)
    receipt(desk, sent, sender="petrova@zavod.example")
    desk.run()
    assert deliveries(desk)[0].confirmed_by == "mdn"
    assert desk.request().status == "closed"


def test_forged_staff_mail_cannot_confirm_a_delivery_or_close_without_one(desk):
    """`#доставлено` and `#закрыть без подтверждения` from mail the MX did not vouch for (a forged
    staff From:): nothing runs, ТП1 is told."""
    staff, notice = op2_request(desk)
    files_sent(desk, staff, notice)
    for attack in ("#доставлено по телефону", "#закрыть без подтверждения: так надо",
                   "#файлы\nОбновление: http://evil.example/fix.exe"):
        desk.reply(notice, staff, attack, dmarc="fail",
                   attachments=(("fix.exe", b"MZ evil"),) if "#файлы" in attack else ())
        desk.run()
        (delivery,) = deliveries(desk)
        assert delivery.status == "sent"
        assert desk.request().status == "awaiting_customer"
        mail = desk.inbox()
        assert CUSTOMER not in mail
        assert set(mail) <= {TP1}


# ---------------------------------------------------------------- the words

@pytest.mark.parametrize("line, name, argument", [
    ("#файлы", "files", ""),
    ("#files дистрибутив 3.1", "files", "дистрибутив 3.1"),
    ("#доставлено по телефону 25.11, Иванов", "delivered", "по телефону 25.11, Иванов"),
    ("#delivered by phone", "delivered", "by phone"),
    ("#закрыть без подтверждения: клиент не отвечает", "close_unconfirmed", "клиент не отвечает"),
    ("#Закрыть Без Подтверждения — файлы на флешке", "close_unconfirmed", "файлы на флешке"),
    ("#close unconfirmed: no answer", "close_unconfirmed", "no answer"),
    ("#закрыть", "close", ""),
    ("#запросить логи, скриншот", "request_files", "логи, скриншот"),
    ("#request-files logs", "request_files", "logs"),
])
def test_op2_commands_are_read(line, name, argument):
    block = parse_commands(line)
    assert not block.errors
    assert (block.commands[0].name, block.commands[0].argument) == (name, argument)


@pytest.mark.parametrize("line", ["#доставлено", "#запросить", "#закрыть без подтверждения",
                                  "#закрыть без подтверждения:  "])
def test_op2_commands_without_what_they_need_are_errors(line):
    block = parse_commands(line)
    assert not block.commands and len(block.errors) == 1


@pytest.mark.parametrize("text, expected", [
    ("Файлы получили, спасибо!", Confirmation.CONFIRMED),
    ("Получил, спасибо", Confirmation.CONFIRMED),
    ("Дистрибутив скачали.", Confirmation.CONFIRMED),
    ("Всё дошло", Confirmation.CONFIRMED),
    ("Файлы не получили", Confirmation.REJECTED),
    ("Спасибо, но архив не открывается", Confirmation.REJECTED),
    ("Получили, но файл поврежден", Confirmation.REJECTED),
    ("Пришлите, пожалуйста, ещё инструкцию", None),
    ("Когда будет патч?", None),
])
def test_receipt_words(text, expected):
    words = DeliveryConfig()
    assert detect_confirmation(text, words.receipt_positive, words.receipt_negative) is expected


def test_delivery_settings_are_checked():
    with pytest.raises(ConfigError, match="delivery.remind_after_hours"):
        load_config(None, environ={"MAILBOT_DELIVERY_REMIND_AFTER_HOURS": "0"})
    config = load_config(None, environ={"MAILBOT_DELIVERY_MAX_REMINDERS": "0"})
    assert config.delivery.max_reminders == 0 and config.delivery.remind_after_minutes == 480
