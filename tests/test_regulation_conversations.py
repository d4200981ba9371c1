"""Conversations a support team can trust (issue 16 §2–5), by mail alone.

Each test is a rule: only an explicit confirmation confirms (regulation §2–4: «получение
подтверждения о решении проблемы»), no question in a reply is lost, an automatic reply is
never a reply, internal mail never reaches a customer (DESIGN.md §9), and the smaller
things a support team relies on (the ФИО kept, original file names, undeliverable addresses,
robot senders). Real Dovecot, PostgreSQL and the SMTP sink, as tests/mailflow.py sets them up.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from mailbot.cli.main import main
from mailbot.config import with_overrides
from mailbot.register.models import AttachmentRow, Event, Message, UndeliverableAddress
from tests.mailflow import CRM, Desk, body
from tests.servers import Received
from tests.test_mail_hygiene import bounce_of

CUSTOMER = "ivanov@zavod.example"
TP1 = "tp1@tecon.example"
PHONE = "+7 495 123-45-67"


def kinds(desk: Desk, number: str | None = None) -> list[str]:
    with desk.sessions() as session:
        request = desk.request(number)
        return [e.kind for e in session.scalars(
            select(Event).where(Event.request_id == request.id).order_by(Event.id))]


def solved(desk: Desk) -> tuple[str, Received]:
    """An ОП3 request answered with a solution (resolved, awaiting the customer's confirmation):
    its assignee and the solution mail the customer got."""
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(CUSTOMER, "Сбой АРМ", "После обновления АРМ диспетчера не запускается.")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "#решено\nПереустановите драйвер ключа.")
    desk.run()
    assert desk.request().status == "resolved"
    return staff, desk.mail_to(CUSTOMER)


def closed(desk: Desk) -> tuple[str, Received]:
    """An ОП3 request solved and confirmed («Помогло!»): its assignee and the closing notice the
    customer got."""
    staff, solution = solved(desk)
    desk.reply(solution, CUSTOMER, "Помогло!")
    desk.run()
    closing = desk.mail_to(CUSTOMER)
    desk.new_mail()
    return staff, closing


def answered(desk: Desk) -> tuple[str, Received]:
    """An ОП1 question answered by its assignee; the answer the customer got."""
    staff = desk.add_staff("sidorov", years=6)
    desk.write(CUSTOMER, "Права пользователей", "Как дать диспетчеру права только на свой район?")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "Сервис → Пользователи → Роли, отметьте район.")
    desk.run()
    assert desk.request().status == "awaiting_customer"
    return staff, desk.mail_to(CUSTOMER)


# ---------------------------------------------------------------- §2 how a reply reads

@pytest.mark.parametrize(("text", "kind", "question"), [
    ("Помогло, спасибо!", "confirmed", ""),
    ("Всё работает, можно закрывать?", "confirmed", ""),
    ("Помогло, ошибок больше нет.", "confirmed", ""),
    ("Спасибо, посмотрим.", "thanks", ""),
    ("Спасибо!", "thanks", ""),
    ("Ок, попробуем завтра утром.", "thanks", ""),
    ("Спасибо за ответ по правам.", "thanks", ""),
    ("Спасибо, но не помогло, ошибка та же.", "rejected", ""),
    ("Всё снова работает, спасибо.", "confirmed", ""),
    ("Вроде заработало, понаблюдаем.", "unclear", ""),
    ("Пока всё работает, понаблюдаем.", "unclear", ""),
    ("Помогло. Спасибо, пока!", "confirmed", ""),
    ("Сделали, как вы написали.", "unclear", ""),
    ("Помогло. А как теперь настроить звук аварий?", "confirmed_and_asks",
     "А как теперь настроить звук аварий?"),
    ("Всё работает. Также пришлите, пожалуйста, руководство оператора.", "confirmed_and_asks",
     "Также пришлите, пожалуйста, руководство оператора."),
    ("Спасибо, проблема решена. Теперь не печатаются отчёты.", "confirmed_and_asks",
     "Теперь не печатаются отчёты."),
    ("Спасибо за ответ по правам… Ещё вопрос: можно ли выгрузку архивов в Excel?", "more",
     "Ещё вопрос: можно ли выгрузку архивов в Excel?"),
    ("Версия сервера 3.2, ОС Astra Linux.", "more", ""),
    ("", "more", ""),
])
def test_a_reply_reads_as_the_customer_means_it(text, kind, question):
    """rules/confirmation.py, read_reply: the rules of docs/workflow.md, "How a customer's reply
    reads", on the examples there."""
    from mailbot.config import load_config
    from mailbot.rules.confirmation import read_reply

    config = load_config(None, environ={})
    reading = read_reply(text, config.workflow, config.classify, config.delivery.receipt_positive)
    assert (reading.kind.value, reading.question) == (kind, question)


# ---------------------------------------------------------------- §2 thanks are no confirmation

@pytest.mark.parametrize("words", ["Спасибо, посмотрим.", "Спасибо!", "Спасибо, попробуем завтра.",
                                   "Ок, спасибо за быстрый ответ."])
def test_thanks_alone_are_no_confirmation_and_the_request_waits(desk, words):
    """§4 «получение подтверждения о решении проблемы»: thanks confirm nothing; the request stays
    resolved (awaiting the confirmation), nobody is bothered, the reply is on the trail."""
    staff, solution = solved(desk)
    desk.reply(solution, CUSTOMER, words)
    desk.run()
    request = desk.request()
    assert (request.status, request.confirmation) == ("resolved", "requested")
    assert desk.new_mail() == []
    assert kinds(desk)[-2:] == ["message_in", "acknowledged"]


def test_thanks_and_we_will_see_do_not_close_an_op2_request(desk):
    """§3: ОП2 closes on a confirmed delivery; «Спасибо, посмотрим.» confirms no receipt."""
    staff = desk.add_staff("sidorov", years=4)
    desk.write(CUSTOMER, "Нужен патч", "Пришлите, пожалуйста, патч 2.4.1 для АРМ.")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "Патч во вложении.", attachments=(("patch.zip", b"PK"),))
    desk.run()
    desk.reply(desk.mail_to(CUSTOMER), CUSTOMER, "Спасибо, посмотрим.")
    desk.run()
    assert desk.request().status == "awaiting_customer"
    with desk.sessions() as session:
        assert session.scalar(select(Event.kind).where(Event.kind == "delivery_confirmed")) is None


@pytest.mark.parametrize("words", ["Помогло, спасибо!", "Проблема решена, всё работает.",
                                   "Сделали, как вы написали. Всё заработало."])
def test_an_explicit_confirmation_closes_the_request(desk, words):
    staff, solution = solved(desk)
    desk.reply(solution, CUSTOMER, words)
    desk.run()
    request = desk.request()
    assert (request.status, request.confirmation) == ("closed", "confirmed")
    mail = desk.inbox()
    assert "закрыт" in body(mail[CUSTOMER][0]) and "подтвердил" in mail[staff][0].parsed()["Subject"]


def test_an_unclear_reply_to_a_closed_request_goes_to_the_assignee_and_it_stays_closed(desk):
    staff, closing = closed(desk)
    desk.reply(closing, CUSTOMER, "Вроде всё заработало, но понаблюдаем ещё.")
    desk.run()
    assert desk.request().status == "closed"
    (told,) = desk.inbox()[staff]
    assert "остаётся закрытым" in body(told) and "#открыть" in body(told)


def test_a_thank_you_to_a_closed_request_does_not_reopen_it(desk):
    _, closing = closed(desk)
    desk.reply(closing, CUSTOMER, "Спасибо большое!")
    desk.run()
    assert desk.request().status == "closed" and desk.new_mail() == []


def test_a_closed_request_written_to_after_the_contract_ended_is_not_served(desk):
    """Regulation §2: support is given under an active support period, checked on the day of
    the mail. A request closed in November, written to again in January after the contract
    ended on 31 December: it stays closed, the customer gets the refusal naming the request,
    the assignee the mail and the way to override it (#открыть)."""
    staff, closing = closed(desk)
    desk.clock.set(datetime(2027, 1, 12, 7, 0, tzinfo=timezone.utc))  # a working Tuesday
    desk.reply(closing, CUSTOMER, "Добрый день! АРМ снова не запускается, та же ошибка.")
    desk.run()

    request = desk.request()
    assert request.status == "closed"
    assert kinds(desk)[-1] == "reopen_refused"
    mail = desk.inbox()
    (refusal,) = mail[CUSTOMER]
    assert request.number in body(refusal) and "не найден действующий" in body(refusal)
    (told,) = mail[staff]
    assert "договора нет, запрос не открыт" in told.parsed()["Subject"]
    assert "#открыть" in body(told) and "снова не запускается" in body(told)

    desk.reply(told, staff, "#открыть")  # the contract was extended: ТП1 overrides
    desk.run()
    assert desk.request().status == "open"


def test_a_closed_request_written_to_within_the_contract_reopens(desk):
    """The same reply while the contract runs reopens the request for its assignee."""
    _, closing = closed(desk)
    desk.clock.set(datetime(2026, 12, 15, 7, 0, tzinfo=timezone.utc))
    desk.reply(closing, CUSTOMER, "Добрый день! АРМ снова не запускается, та же ошибка.")
    desk.run()
    assert desk.request().status == "open"
    assert "reopen_refused" not in kinds(desk)


# ---------------------------------------------------------------- §2 no question is lost

def test_a_confirmation_with_a_new_question_closes_the_request_and_opens_a_linked_one(desk):
    """The old request closes as confirmed; the new question becomes a request of its own, linked
    to it, with the question as its text; the customer is told the new number in one mail; the
    question reaches a person (the same assignee, who may handle it)."""
    staff, answer = answered(desk)
    first = desk.request()
    desk.reply(answer, CUSTOMER, "Спасибо за ответ по правам, всё работает. Ещё вопрос: можно ли "
               "настроить выгрузку архивов в Excel?")
    desk.run()

    old, new = desk.request(first.number), desk.request()
    assert (old.status, old.confirmation) == ("closed", "confirmed")
    assert new.number != old.number and new.follows_id == old.id and new.status == "open"
    assert new.level == 1 and new.assignee_id == old.assignee_id
    assert new.organization_id == old.organization_id and new.requester_email == CUSTOMER
    with desk.sessions() as session:
        (text,) = session.scalars(select(Message.body).where(Message.request_id == new.id)
                                  .where(Message.direction == "in")).all()
    assert text == "Ещё вопрос: можно ли настроить выгрузку архивов в Excel?"
    mail = desk.inbox()
    (ack,) = mail[CUSTOMER]  # one mail: the new number, and the old one closed
    assert new.number in ack.parsed()["Subject"]
    assert old.number in body(ack) and "закрыт" in body(ack)
    subjects = [m.parsed()["Subject"] for m in mail[staff]]
    assert any(new.number in s and "Новый запрос" in s for s in subjects)
    assert any(old.number in s and "подтвердил" in s for s in subjects)
    assert "follow_up" in kinds(desk, old.number)


def test_a_reply_that_only_asks_something_new_reopens_the_request(desk):
    """The issue's mail: thanks and a new question, no confirmation: the request reopens and the
    question goes to the assignee; nothing closes."""
    staff, answer = answered(desk)
    desk.reply(answer, CUSTOMER, "Спасибо за ответ по правам… Ещё вопрос: можно ли выгрузку "
               "архивов в Excel?")
    desk.run()
    request = desk.request()
    assert (request.status, request.confirmation) == ("open", "none")
    (told,) = desk.inbox()[staff]
    assert "выгрузку архивов в Excel" in body(told) and "вопрос или дополнение" in body(told)


def test_an_unclear_reply_goes_to_the_assignee_with_the_bots_reading(desk):
    """A hedged confirmation is shown to the assignee with the bot's reading; the request keeps
    waiting; one command (#подтверждено) decides and closes it as confirmed."""
    staff, solution = solved(desk)
    desk.reply(solution, CUSTOMER, "Вроде заработало, понаблюдаем.")
    desk.run()
    assert desk.request().status == "resolved"
    told = desk.mail_to(staff)
    assert "НЕОДНОЗНАЧНЫЙ" in told.parsed()["Subject"]
    assert "Как бот прочитал ответ: неоднозначно" in body(told) and "#подтверждено" in body(told)

    desk.reply(told, staff, "#подтверждено")
    desk.run()
    request = desk.request()
    assert (request.status, request.confirmation) == ("closed", "confirmed")
    assert "закрыт" in body(desk.mail_to(CUSTOMER))


def test_something_done_without_a_result_is_left_to_the_assignee(desk):
    staff, solution = solved(desk)
    desk.reply(solution, CUSTOMER, "Сделали, как вы написали.")
    desk.run()
    assert desk.request().status == "resolved"
    assert "НЕОДНОЗНАЧНЫЙ" in desk.mail_to(staff).parsed()["Subject"]


def test_a_staff_confirmation_waits_for_unconfirmed_files(desk):
    """#подтверждено closes like #закрыть: files sent must be confirmed first (§3)."""
    staff, solution = solved(desk)
    desk.reply(solution, CUSTOMER, "Вроде заработало.")
    desk.run()
    told = desk.mail_to(staff)
    desk.reply(told, staff, "Лог для проверки во вложении.", attachments=(("check.log", b"log"),))
    desk.run()
    desk.new_mail()
    desk.reply(told, staff, "#подтверждено")
    desk.run()
    (reply,) = desk.new_mail()
    assert reply.rcpt_tos == [staff] and "получение отправленных файлов не подтверждено" in body(reply)
    assert desk.request().status != "closed"


# ---------------------------------------------------------------- §3 automatic replies

VACATION = ("Здравствуйте!\nЯ в отпуске до 23.03.2026. По срочным вопросам обращайтесь к "
            "Петрову Петру, тел. 123-45-67.")


def test_a_vacation_notice_without_automatic_headers_never_reopens_a_request(desk):
    """No Auto-Submitted, no telling subject: the text alone makes it an auto-reply; it joins the
    trail, reopens nothing, confirms nothing, tells nobody and gets no answer."""
    staff, solution = solved(desk)
    desk.reply(solution, CUSTOMER, VACATION)
    desk.run()
    request = desk.request()
    assert (request.status, request.confirmation) == ("resolved", "requested")
    assert desk.new_mail() == []
    with desk.sessions() as session:
        last = session.scalars(select(Message).where(Message.direction == "in")
                               .order_by(Message.id.desc())).first()
    assert last.kind == "auto_reply"


def test_a_staff_vacation_notice_is_never_relayed_to_the_customer(desk):
    """The assignee's autoresponder answers the notification (To: the support address, the
    request number in the subject): nothing reaches the customer, nothing stops the clock."""
    staff = desk.add_staff("sidorov", years=6)
    desk.write(CUSTOMER, "Настройка АРМ", "Как настроить АРМ диспетчера?")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "Я в отпуске до 23.03.2026, по срочным вопросам "
               "обращайтесь к Петрову.")
    desk.run()
    request = desk.request()
    assert (request.status, request.first_reaction_at) == ("open", None)
    assert desk.new_mail() == []


# ---------------------------------------------------------------- §4 internal mail

def open_request(desk: Desk) -> tuple[str, Received]:
    staff = desk.add_staff("sidorov", years=6)
    desk.add_staff("elena", years=9)
    desk.add_staff("tp2expert", years=10, tier="tp2", department="Отдел программирования")
    desk.write(CUSTOMER, "Сбой опроса", "Сервер опроса не опрашивает котельную №4 с утра.")
    desk.run()
    return staff, desk.mail_to(staff)


def test_staff_mail_to_colleagues_with_support_in_cc_is_an_internal_note(desk):
    """The issue's mail: ТП2 writes to ТП1 with Cc: support@ and the request number in the
    subject. Kept on the request as a note, shown to the assignee, never relayed, and no
    reaction: the clock runs on."""
    staff, notice = open_request(desk)
    number = desk.request().number
    desk.write("tp2expert@tecon.example", f"[{number}] Решение по инциденту",
               "Елена Сергеевна, решение по инциденту: перезапустите службу опроса.\n"
               "Передайте заказчику: обновление выйдет в пятницу.",
               to="elena@tecon.example", cc=desk.mailbox.user)
    desk.run()

    request = desk.request()
    assert (request.status, request.first_reaction_at) == ("open", None)
    mail = desk.inbox()
    assert CUSTOMER not in mail
    (note,) = mail.pop(staff)
    assert "Внутренняя заметка" in note.parsed()["Subject"] and "Передайте заказчику" in body(note)
    assert not mail
    with desk.sessions() as session:
        event = session.scalars(select(Event).where(Event.kind == "note")).one()
    assert "only in Cc" in event.details["how"] and event.request_id == request.id


@pytest.mark.parametrize("commands", ["#закрыть", "#решено\nПерезапустите службу.", "#уровень ОП1"])
def test_commands_in_an_internal_note_do_nothing(desk, commands):
    staff, notice = open_request(desk)
    number = desk.request().number
    before = desk.request()
    desk.write(staff, f"Re: [{number}] Сбой опроса", commands, to="elena@tecon.example",
               cc=desk.mailbox.user)
    desk.run()
    after = desk.request()
    assert (after.status, after.level, after.first_reaction_at) == (before.status, before.level, None)
    assert CUSTOMER not in desk.inbox()


def test_staff_mail_to_support_and_staff_together_is_an_internal_note(desk):
    staff, notice = open_request(desk)
    number = desk.request().number
    desk.write("elena@tecon.example", f"Re: [{number}] Сбой опроса", "Коллеги, это к ТП2.",
               to=f"{desk.mailbox.user}, tp2@tecon.example")
    desk.run()
    assert CUSTOMER not in desk.inbox() and desk.request().first_reaction_at is None


def test_staff_mail_in_the_customers_thread_without_the_number_is_an_internal_note(desk):
    """To: support, but an answer to the customer's own mail (a copy a colleague got), not to the
    bot's notification, and no number in the subject: not meant for the customer."""
    staff, notice = open_request(desk)
    with desk.sessions() as session:
        first = session.scalars(select(Message.message_id).where(Message.direction == "in")).first()
    desk.write(staff, "Re: Сбой опроса", "Посмотрю после обеда.",
               headers={"In-Reply-To": f"<{first}>", "References": f"<{first}>"})
    desk.run()
    assert CUSTOMER not in desk.inbox() and desk.request().first_reaction_at is None
    assert "note" in kinds(desk)


def test_a_staff_answer_to_the_notification_still_reaches_the_customer(desk):
    staff, notice = open_request(desk)
    desk.reply(notice, staff, "Перезапустите службу опроса, пожалуйста.", cc="elena@tecon.example")
    desk.run()
    assert "Перезапустите службу" in body(desk.mail_to(CUSTOMER))
    assert desk.request().first_reaction_at is not None


def test_tp2_mail_never_reaches_the_customer_even_addressed_to_support(desk):
    """Regulation §5: ТП2 answers ТП1, and ТП1 relays the solution; a ТП2 member replying to
    the notification with To: support@ writes an internal note."""
    staff, notice = open_request(desk)
    desk.reply(notice, "tp2expert@tecon.example", "Это известная ошибка, решение: обновить драйвер.")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail and "обновить драйвер" in body(mail[staff][0])
    assert desk.request().first_reaction_at is None


def test_the_note_address_makes_staff_mail_an_internal_note(desk):
    """``support.note_address`` (an alias of the bot's mailbox, as Request Tracker's comment
    address): a reply to the notification sent there is a note for the assignee."""
    desk.config = with_overrides(desk.config, support={"note_address": "notes@tecon.example"})
    staff, notice = open_request(desk)
    desk.write("elena@tecon.example", f"Re: {notice.parsed()['Subject']}",
               "Клиент звонил: котельная №4 на ремонте.", reply_to=notice, to="notes@tecon.example")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail
    (note,) = mail[staff]
    assert "котельная №4 на ремонте" in body(note) and "notes@tecon.example" in body(note)
    assert desk.request().first_reaction_at is None


def test_the_note_command_is_shown_to_the_assignee(desk):
    staff, notice = open_request(desk)
    desk.reply(notice, "elena@tecon.example", "#заметка\nЗвонили из котельной, уже работает.")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail
    assert "уже работает" in body(mail[staff][0])


def test_staff_mail_among_staff_about_no_request_gets_no_help_mail(desk):
    desk.add_staff("sidorov", years=6)
    desk.write("sidorov@tecon.example", "Обед", "Коллеги, обед в 13:00.", to=TP1, cc=desk.mailbox.user)
    desk.run()
    assert desk.new_mail() == []


# ---------------------------------------------------------------- §5 smaller things

def test_the_full_name_from_a_contact_answer_is_kept_when_the_company_is_unknown(desk):
    """§2: the ФИО the customer gave is kept (and shown to ТП1) even though the company is not
    found; #организация then completes the intake with it."""
    desk.add_staff("sidorov", years=6)
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?",
               name="Отдел АСУ")
    desk.run()
    ask = desk.inbox()["someone@gmail.example"][0]
    desk.reply(ask, "someone@gmail.example", "Мы из ООО Неизвестная контора.\nФИО: Семёнов Пётр Ильич")
    desk.run()
    request = desk.request()
    assert (request.status, request.requester_name) == ("awaiting_contact_info", "Семёнов Пётр Ильич")
    assert "Семёнов Пётр Ильич" in body(desk.mail_to(TP1))


def test_an_attachment_keeps_its_original_name_for_staff_and_a_safe_one_on_disk(desk, tmp_path,
                                                                                monkeypatch, capsys):
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(CUSTOMER, "Сбой АРМ", "АРМ не запускается, лог во вложении.",
               attachments=(('журнал: 12/03 "сбой".log', b"log"),))
    desk.run()
    with desk.sessions() as session:
        row = session.scalars(select(AttachmentRow)).one()
    assert row.original_filename == 'журнал: 12/03 "сбой".log'
    assert row.filename == "журнал_ 12_03 _сбой_.log"
    assert '«журнал: 12/03 "сбой".log»' in body(desk.mail_to(staff))

    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    assert main(["requests", "files", desk.request().number, "--save", str(tmp_path)]) == 0
    assert 'журнал: 12/03 "сбой".log' in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [f"{row.id}-журнал_ 12_03 _сбой_.log"]


def phone_desk(desk: Desk) -> str:
    """The CRM knows the customer's phone; a new request from the customer; its assignee."""
    desk.load_crm(CRM.replace(";ivanov@zavod.example;;", f";ivanov@zavod.example;{PHONE};"))
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(CUSTOMER, "Сбой АРМ", "АРМ не запускается.")
    desk.run()
    return staff


def test_a_permanent_bounce_marks_the_address_and_stops_automatic_mail_to_it(desk):
    """§5: the bounce of our acknowledgement marks the address; the assignee is told to phone
    (the CRM's number); later automatic mail (a closing notice) is not sent; a staff answer is
    tried, and the server accepting it clears the mark."""
    staff = phone_desk(desk)
    ack = [m for m in desk.new_mail() if CUSTOMER in m.rcpt_tos][0]
    desk.dovecot.append(desk.mailbox.user, bounce_of(ack.parsed()["Message-ID"].strip("<>"), CUSTOMER))
    desk.run()
    with desk.sessions() as session:
        mark = session.get(UndeliverableAddress, CUSTOMER)
    assert mark.source == "dsn" and "5.1.1" in mark.reply
    (told,) = desk.inbox()[staff]
    assert "не доставлено" in told.parsed()["Subject"] and PHONE in body(told)

    desk.write(CUSTOMER, "Ещё", "И отчёты не печатаются.")  # a new request: no acknowledgement
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail
    assert "НЕДОСТАВЛЯЕМ" in body(mail[staff][0]) and PHONE in body(mail[staff][0])

    desk.reply(mail[staff][0], staff, "Позвонил клиенту, отправляю решение и письмом.")
    desk.run()
    assert CUSTOMER in desk.inbox()  # a staff answer is tried all the same…
    desk.run()  # … the sender's hook has cleared the mark
    with desk.sessions() as session:
        assert session.get(UndeliverableAddress, CUSTOMER) is None
    assert "address_deliverable" in kinds(desk)


def test_a_forged_bounce_cannot_mark_an_address_our_mail_did_not_go_to(desk):
    """Attack: a bounce naming our acknowledgement's Message-ID but another customer's address
    (a bounce is as forgeable as any mail): nothing is marked, mail to the victim goes on."""
    phone_desk(desk)
    ack = [m for m in desk.new_mail() if CUSTOMER in m.rcpt_tos][0]
    desk.dovecot.append(desk.mailbox.user, bounce_of(ack.parsed()["Message-ID"].strip("<>"),
                                                     "petrov@old.example"))
    desk.run()
    with desk.sessions() as session:
        assert session.scalars(select(UndeliverableAddress)).all() == []


def test_a_staff_command_clears_the_undeliverable_mark(desk):
    staff = phone_desk(desk)
    ack = [m for m in desk.new_mail() if CUSTOMER in m.rcpt_tos][0]
    desk.dovecot.append(desk.mailbox.user, bounce_of(ack.parsed()["Message-ID"].strip("<>"), CUSTOMER))
    desk.run()
    (told,) = desk.inbox()[staff]
    desk.reply(told, staff, "#адрес исправлен")
    desk.run()
    with desk.sessions() as session:
        assert session.get(UndeliverableAddress, CUSTOMER) is None
    assert desk.new_mail() == []  # nothing to the customer: a command only
    desk.reply(told, staff, "#адрес исправлен")  # nothing left to clear: the staff member is told
    desk.run()
    (error,) = desk.new_mail()
    assert error.rcpt_tos == [staff] and "не отмечен как недоставляемый" in body(error)


@pytest.mark.parametrize("robot", ["1c-noreply@zavod.example", "noreply@zavod.example",
                                   "mailer@zavod.example", "robot.1c@zavod.example"])
def test_robot_senders_get_no_acknowledgement(desk, robot):
    desk.add_staff("kuznetsov", years=7)
    desk.write(robot, "Ошибка обмена 1С", "Обмен с АС завершился с ошибкой: таймаут соединения.")
    desk.run()
    request = desk.request()  # registered (the company by the domain), for ТП1 to see …
    assert request.requester_email == robot and request.status == "awaiting_contact_info"
    mail = desk.inbox()
    assert robot not in mail and TP1 in mail  # … and nothing automatic goes to the robot
