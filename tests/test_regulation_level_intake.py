"""The level at intake, end to end (regulation, "уровни оказания помощи"; issue 16 §1): ТП1 is
told why the level was chosen, confirms it when the classifier is unsure, and the customer is
never promised the shorter norm of a level in doubt."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailbot.register.models import Event
from tests.mailflow import Desk, body

CUSTOMER = "ivanov@zavod.example"
STRANGER = "someone@gmail.example"


def created_details(desk: Desk) -> dict:
    with desk.sessions() as session:
        return session.scalar(select(Event.details).where(
            Event.request_id == desk.request().id, Event.kind == "created"))


def test_the_notification_says_why_the_level_was_chosen(desk):
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(CUSTOMER, "АРМ зависает", "Добрый день! При открытии мнемосхемы АРМ диспетчера "
               "зависает намертво. Скриншот во вложении.")
    desk.run()

    request = desk.request()
    assert request.level == 3
    assert request.due_at - request.received_at == timedelta(hours=2)
    mail = desk.inbox()
    notice = mail[staff][0]
    assert "ОП3 Новый запрос" in notice.parsed()["Subject"]
    text = body(notice)
    assert "Уровень ОП3 предложен по словам клиента" in text and "«зависает»" in text
    assert "не определён уверенно" not in text
    ack = body(mail[CUSTOMER][0])
    assert "ОП3" in ack and "2 часа" in ack
    assert created_details(desk)["level"]["cues"][0][:2] == [3, "зависает"]


def test_an_unsure_level_asks_tp1_to_confirm_and_promises_the_customer_no_shorter_norm(desk):
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(CUSTOMER, "Обращение", "Здравствуйте! У нас на ЦТП-3 опять такое дело, "
               "посмотрите, пожалуйста.")
    desk.run()

    request = desk.request()
    assert request.level == 3  # a possible failure, until ТП1 says otherwise
    assert request.due_at - request.received_at == timedelta(minutes=20)  # the shortest norm
    mail = desk.inbox()
    notice = mail[staff][0]
    assert "ОП3? Новый запрос" in notice.parsed()["Subject"]
    text = body(notice)
    assert "Уровень не определён уверенно" in text and "#уровень ОП3" in text
    ack = body(mail[CUSTOMER][0])
    assert "Уровень помощи определит специалист" in ack
    assert "реагирования: 2 часа" in ack and "20 минут" not in ack and "ОП" not in ack
    assert created_details(desk)["level"]["unsure"] is True

    desk.reply(notice, staff, "#уровень ОП1")
    desk.run()
    request = desk.request()
    assert request.level == 1
    assert request.due_at - request.received_at == timedelta(minutes=20)


def test_confirming_an_unsure_level_gives_it_its_own_deadline(desk):
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(CUSTOMER, "Звонок", "позвоните мне")
    desk.run()
    assert desk.request().due_at - desk.request().received_at == timedelta(minutes=20)

    desk.reply(desk.mail_to(staff), staff, "#уровень ОП3")
    desk.run()
    request = desk.request()
    assert request.level == 3
    assert request.due_at - request.received_at == timedelta(hours=2)


def test_an_unsure_level_is_remembered_across_the_contact_question(desk):
    """§2–4: the acknowledgement waits for the company and ФИО; it is sent later, from the
    trail, still without the shorter norm."""
    desk.add_staff("kuznetsov", years=7)
    desk.write(STRANGER, "Обращение", "Здравствуйте, у нас опять такое дело на котельной.")
    desk.run()
    assert desk.request().status == "awaiting_contact_info"
    mail = desk.inbox()
    ask = mail[STRANGER][0]
    assert "ОП3? Новый запрос" in mail["tp1@tecon.example"][0].parsed()["Subject"]

    desk.reply(ask, STRANGER, "Организация: ООО Тепловые сети\nФИО: Смирнова Анна Сергеевна")
    desk.run()
    request = desk.request()
    assert request.status == "open"
    assert request.due_at - request.received_at == timedelta(minutes=20)
    ack = body(desk.inbox()[STRANGER][0])
    assert "Уровень помощи определит специалист" in ack and "реагирования: 2 часа" in ack


def test_a_level_set_by_staff_while_waiting_for_contact_details_is_not_in_doubt(desk):
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(STRANGER, "Обращение", "Здравствуйте, у нас опять такое дело на котельной.")
    desk.run()
    mail = desk.inbox()
    desk.reply(mail["tp1@tecon.example"][0], staff, "#уровень ОП2")
    desk.run()
    desk.reply(mail[STRANGER][0], STRANGER,
               "Организация: ООО Тепловые сети\nФИО: Смирнова Анна Сергеевна")
    desk.run()

    request = desk.request()
    assert (request.status, request.level) == ("open", 2)
    assert request.due_at - request.received_at == timedelta(minutes=40)
    ack = body(desk.inbox()[STRANGER][0])
    assert "ОП2" in ack and "40 минут" in ack and "определит специалист" not in ack
