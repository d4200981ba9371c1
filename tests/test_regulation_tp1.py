"""The ТП1 workflow of the regulation (sections 2–4 and 6), by mail alone.

Each test is a step of the regulation; the customer, the staff and the bot
only exchange real mail through Dovecot and the SMTP sink.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import any_, select

from mailbot.register.models import Contact, Event, Message, Outbox
from tests.mailflow import Desk, body

CUSTOMER = "ivanov@zavod.example"
TP1 = "tp1@tecon.example"


def events(desk: Desk, number: str) -> list[tuple[str, str | None]]:
    with desk.sessions() as session:
        request = desk.request(number)
        return [(e.kind, e.to_status) for e in session.scalars(
            select(Event).where(Event.request_id == request.id).order_by(Event.id))]


# ---------------------------------------------------------------- §2 ОП1

def test_op1_intake_contact_found_contract_checked_request_recorded(desk):
    """§2: company and person found in the CRM, support period active, request registered (ОП1)."""
    staff = desk.add_staff("sidorov", years=4)
    desk.write(CUSTOMER, "Перепривязка лицензии", "Подскажите, как выполнить перепривязку ключа?",
               name="Иван Иванов")
    desk.run()

    request = desk.request()
    assert (request.status, request.level) == ("open", 1)
    assert request.due_at - request.received_at == timedelta(minutes=20)
    assert request.requester_name == "Иванов Иван Иванович"
    mail = desk.inbox()
    (ack,) = mail[CUSTOMER]
    assert "ОП1" in body(ack) and "20 минут" in body(ack)
    (notice,) = mail[staff]  # the eligible assignee is told, with the level and contract
    text = body(notice)
    assert "ОП1" in text and "ТП-17" in text and "перепривязку ключа" in text
    assert request.assignee_id is not None


def test_op1_staff_answer_is_relayed_and_stops_the_reaction_clock(desk):
    """§2: ТП1 helps; the answer reaches the customer from the support address, in their thread."""
    staff = desk.add_staff("sidorov", years=4)
    first = desk.write(CUSTOMER, "Настройка АРМ", "Как настроить АРМ диспетчера?")
    desk.run()
    request = desk.request()
    assert request.first_reaction_at is None  # the automatic acknowledgement is no reaction
    notice = desk.mail_to(staff)

    desk.clock.advance(minutes=5)
    desk.reply(notice, staff, "Откройте меню Сервис → Настройки и укажите сервер.")
    desk.run()

    answer = desk.mail_to(CUSTOMER).parsed()
    (sender,) = answer["From"].addresses
    assert sender.addr_spec == desk.mailbox.user
    assert "Sidorov" in sender.display_name
    assert "Сервис → Настройки" in answer.get_body(("plain",)).get_content()
    assert "> Как настроить" not in answer.get_body(("plain",)).get_content()  # no quoted notice
    assert f"<{first}>" in answer["References"]
    assert request.number in answer["Subject"]
    assert "Auto-Submitted" not in answer  # a human answer
    request = desk.request()
    assert request.status == "awaiting_customer"
    assert request.first_reaction_at == request.received_at + timedelta(minutes=5)


def test_op1_closed_when_the_customer_confirms(desk):
    """§2: the customer is helped: confirmation closes the request."""
    staff = desk.add_staff("sidorov", years=4)
    desk.write(CUSTOMER, "Настройка АРМ", "Как настроить АРМ диспетчера?")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "Меню Сервис → Настройки.")
    desk.run()
    desk.reply(desk.mail_to(CUSTOMER), CUSTOMER, "Спасибо, всё получилось!")
    desk.run()

    request = desk.request()
    assert (request.status, request.confirmation) == ("closed", "confirmed")
    mail = desk.inbox()
    assert "закрыт" in body(mail[CUSTOMER][0])
    assert "подтвердил" in mail[staff][0].parsed()["Subject"]


def test_op1_closed_after_the_quiet_period(desk):
    """§2: an answered ОП1 request closes by itself when the customer stays silent."""
    from mailbot.daemon import Daemon
    from mailbot.scheduler import run_timers

    staff = desk.add_staff("sidorov", years=4)
    desk.write(CUSTOMER, "Настройка АРМ", "Как настроить АРМ диспетчера?")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "Меню Сервис → Настройки.")
    desk.run()
    desk.new_mail()

    for hours, expected in ((71, []), (2, [desk.request().number])):
        desk.clock.advance(hours=hours)
        assert run_timers(Daemon(desk.config, desk.sessions, desk.clock)) == expected
    assert desk.request().status == "closed"
    desk.run()
    assert "не поступало вопросов" in body(desk.mail_to(CUSTOMER))


# ---------------------------------------------------------------- §3 ОП2

def test_op2_files_sent_by_staff_reach_the_customer_and_receipt_closes(desk):
    """§3: ОП2 — a file request; staff send the file; the customer confirms receipt; closed."""
    staff = desk.add_staff("sidorov", years=3)
    desk.write(CUSTOMER, "Нужен патч", "Пришлите, пожалуйста, патч 2.4.1 и документацию.")
    desk.run()
    request = desk.request()
    assert request.level == 2
    assert request.due_at - request.received_at == timedelta(minutes=40)
    notice = desk.mail_to(staff)

    desk.reply(notice, staff, "Патч во вложении.", attachments=(("patch-2.4.1.zip", b"PK\x03\x04 patch"),))
    desk.run()
    sent = desk.mail_to(CUSTOMER).parsed()
    (attachment,) = list(sent.iter_attachments())
    assert attachment.get_filename() == "patch-2.4.1.zip"
    assert attachment.get_content() == b"PK\x03\x04 patch"

    desk.reply(desk.sink.messages[-1], CUSTOMER, "Файл получили, спасибо.")
    desk.run()
    assert desk.request().status == "closed"


# ---------------------------------------------------------------- §4 ОП3

def test_op3_known_error_database_searched_incident_linked_solution_confirmed(desk):
    """§4: ОП3 — search the known errors, link the incident, send the solution, confirm, close."""
    staff = desk.add_staff("kuznetsov", years=7)
    desk.add_staff("junior", years=3)  # too little experience for ОП3 (§6)
    desk.add_incident("INC-000045", "АРМ не запускается после обновления драйверов",
                      "Сбой при запуске АРМ диспетчера после обновления драйверов",
                      "Переустановите драйвер ключа версии 3.2 и перезапустите службу.")
    desk.add_incident("INC-000046", "Не печатаются отчёты", "Ошибка печати", "Обновите принтер.")
    desk.write(CUSTOMER, "Сбой: АРМ не запускается",
               "После обновления драйверов АРМ диспетчера не запускается, критический сбой.")
    desk.run()

    request = desk.request()
    assert request.level == 3
    assert request.due_at - request.received_at == timedelta(hours=2)
    notice = desk.mail_to(staff)  # the 7-year specialist, not the junior
    assert "INC-000045" in body(notice)
    assert body(notice).index("INC-000045") < body(notice).find("INC-000046") or \
        "INC-000046" not in body(notice)

    desk.reply(notice, staff, "#инцидент INC-000045")
    desk.run()
    solution = desk.mail_to(CUSTOMER).parsed()
    assert "[INC-000045]" in solution["Subject"] and request.number in solution["Subject"]
    assert "Переустановите драйвер" in solution.get_body(("plain",)).get_content()
    assert "подтвердите" in solution.get_body(("plain",)).get_content()
    assert (desk.request().status, desk.request().confirmation) == ("resolved", "requested")

    desk.reply(desk.sink.messages[-1], CUSTOMER, "Помогло, спасибо!")
    desk.run()
    request = desk.request()
    assert (request.status, request.confirmation) == ("closed", "confirmed")
    assert request.incident_id is not None


def test_op3_not_helped_reopens_the_request(desk):
    """§4: without the customer's confirmation the request is not closed: "не помогло" reopens it."""
    staff = desk.add_staff("kuznetsov", years=7)
    desk.add_incident("INC-000045", "АРМ не запускается", "Сбой запуска", "Переустановите драйвер.")
    desk.write(CUSTOMER, "Сбой АРМ", "АРМ не запускается.")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "#инцидент INC-000045\nПопробуйте переустановить драйвер.")
    desk.run()
    desk.reply(desk.mail_to(CUSTOMER), CUSTOMER, "Спасибо, но не помогло, ошибка та же.")
    desk.run()

    request = desk.request()
    assert (request.status, request.confirmation) == ("open", "rejected")
    assert "НЕ ПОМОГЛО" in desk.mail_to(staff).parsed()["Subject"]


# ---------------------------------------------------------------- intake: who is writing

def test_unknown_sender_is_asked_for_company_and_full_name(desk):
    """§2–4: contact information first: the company name and the person's ФИО."""
    desk.add_staff("sidorov", years=4)
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?")
    desk.run()

    request = desk.request()
    assert request.status == "awaiting_contact_info"
    ask = desk.inbox()["someone@gmail.example"][0]
    assert "наименование вашей организации" in body(ask)

    desk.reply(ask, "someone@gmail.example",
               "Организация: ООО Тепловые сети\nФИО: Смирнова Анна Сергеевна")
    desk.run()
    request = desk.request()
    assert request.status == "open"
    assert request.requester_name == "Смирнова Анна Сергеевна"
    with desk.sessions() as session:
        contact = session.scalar(select(Contact).where(Contact.email == "someone@gmail.example"))
        assert contact.full_name == "Смирнова Анна Сергеевна"
    assert "ОП1" in body(desk.inbox()["someone@gmail.example"][0])  # now acknowledged


def test_sender_identified_by_signature_in_the_first_mail(desk):
    """A clear signature (company + ФИО) in the first mail is enough; nothing is asked."""
    desk.write("anna@mail.example", "Настройка", "Как настроить опрос?\n\n--\n"
               "Смирнова Анна Сергеевна\nинженер, ООО «Тепловые сети»")
    desk.run()
    request = desk.request()
    assert request.status == "open"
    assert request.requester_name == "Смирнова Анна Сергеевна"


def test_unmatched_contact_details_go_to_staff(desk):
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку?")
    desk.run()
    ask = desk.inbox()["someone@gmail.example"][0]
    desk.reply(ask, "someone@gmail.example", "Мы из ООО Неизвестная контора, Семёнов")
    desk.run()
    assert desk.request().status == "awaiting_contact_info"
    assert "Не удалось определить" in desk.mail_to(TP1).parsed()["Subject"]


def test_expired_support_period_is_politely_refused_and_staff_can_override(desk):
    """§2: the support period must be active; staff may override with #открыть."""
    staff = desk.add_staff("sidorov", years=4)
    desk.write("petrov@old.example", "Настройка", "Как настроить опрос счётчиков?")
    desk.run()

    request = desk.request()
    assert request.status == "rejected"
    mail = desk.inbox()
    refusal = mail["petrov@old.example"][0]
    assert "не найден действующий" in body(refusal) and "отдел продаж" in body(refusal)
    notice = mail[TP1][0]
    assert "Отказ" in notice.parsed()["Subject"]

    desk.reply(notice, staff, "#открыть\nДоговор продлён, см. письмо коммерческого отдела.")
    desk.run()
    assert desk.request().status in ("open", "awaiting_customer")


# ---------------------------------------------------------------- staff commands

def test_staff_command_set_level_recomputes_the_deadline_and_is_recorded(desk):
    staff = desk.add_staff("kuznetsov", years=7)
    desk.write(CUSTOMER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    notice = desk.mail_to(staff)
    desk.reply(notice, staff, "#уровень ОП3")
    desk.run()

    request = desk.request()
    assert request.level == 3
    assert request.due_at - request.received_at == timedelta(hours=2)
    assert ("level", None) in events(desk, request.number)
    assert desk.new_mail() == []  # nothing goes to the customer


def test_staff_internal_note_is_not_sent_to_the_customer(desk):
    staff = desk.add_staff("sidorov", years=4)
    desk.write(CUSTOMER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "#заметка\nКлиент звонил, уточнил версию 2.4.")
    desk.run()
    assert desk.new_mail() == []
    assert ("note", None) in events(desk, desk.request().number)


def test_unknown_or_malformed_command_is_answered_with_the_valid_ones(desk):
    staff = desk.add_staff("sidorov", years=4)
    desk.write(CUSTOMER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "#уровнь ОП2\nВот ответ клиенту.")
    desk.run()
    (reply,) = desk.new_mail()  # only to the staff member: nothing relayed by mistake
    assert reply.rcpt_tos == [staff]
    assert "#уровень" in body(reply) and "неизвестная команда" in body(reply)
    assert desk.request().status == "open"


def test_assignment_respects_the_regulation_staffing(desk):
    """§6: ОП1/ОП2 by project support with ≥ 3 years; ОП3/ОП4 with ≥ 5 years."""
    desk.add_staff("novice", years=2)
    desk.add_staff("programmer", years=10, department="Отдел программирования")
    able = desk.add_staff("sidorov", years=3)
    desk.write(CUSTOMER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    assert desk.mail_to(able)
    novice_mail = desk.write(CUSTOMER, "Сбой", "Критический сбой сервера")
    desk.run()
    assert novice_mail
    assert desk.mail_to(TP1)  # nobody with ≥ 5 years: the group is told


def test_staff_assign_command_checks_eligibility(desk):
    staff = desk.add_staff("kuznetsov", years=7)
    desk.add_staff("novice", years=3)
    desk.write(CUSTOMER, "Сбой", "Критический сбой сервера")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "#назначить novice")
    desk.run()
    (reply,) = desk.new_mail()
    assert reply.rcpt_tos == [staff] and "не может вести запросы ОП3" in body(reply)


def test_staff_mail_naming_no_request_gets_help(desk):
    staff = desk.add_staff("sidorov", years=4)
    desk.write(staff, "Привет", "Как дела?")
    desk.run()
    (reply,) = desk.new_mail()
    assert reply.rcpt_tos == [staff] and "не связано" in body(reply)
    with desk.sessions() as session:
        assert session.scalar(select(Outbox.kind).where(any_(Outbox.recipients) == staff)) == "staff_help"
        assert session.scalars(select(Message)).all()


def test_commands_from_a_former_staff_member_do_nothing(desk):
    staff = desk.add_staff("sidorov", years=4)
    desk.add_staff("retired", years=9, active=False)
    desk.write(CUSTOMER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    notice = desk.mail_to(staff)
    desk.reply(notice, "retired@tecon.example", "#закрыть")
    desk.run()
    assert desk.request().status == "open"
    assert CUSTOMER not in desk.inbox()  # nothing reached the customer
