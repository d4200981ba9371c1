"""Replies act only for the person they belong to (issue 15, part 3; docs/operations.md, Security model).

Each attack is a mail through the real pipeline (Dovecot, PostgreSQL, the SMTP sink); each test
asserts that nothing changed, who was told, and that the attacker got nothing.
"""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mailbot.config import with_overrides
from mailbot.register.models import Contact, Event, Message, Outbox, Request
from tests.mailflow import Desk, body

CUSTOMER = "ivanov@zavod.example"
COLLEAGUE = "petrova@zavod.example"  # a CRM contact of the same company
STRANGER = "mallory@evil.example"
TP1 = "tp1@tecon.example"
WATCHED = ("status", "confirmation", "organization_id", "contact_id", "requester_name",
           "closed_at", "level", "assignee_id")


def resolved_request(desk: Desk) -> tuple[str, Request]:
    """A customer's request with a solution sent, waiting for the customer's confirmation."""
    staff = desk.add_staff("sidorov", years=6)
    desk.write(CUSTOMER, "Не запускается АРМ", "После обновления АРМ не запускается.")
    desk.run()
    desk.reply(desk.mail_to(staff), staff, "#решено\nПереустановите драйвер ключа.")
    desk.run()
    desk.new_mail()
    return staff, desk.request()


def state(desk: Desk, number: str | None = None) -> dict:
    request = desk.request(number)
    return {key: getattr(request, key) for key in WATCHED}


def kinds(desk: Desk) -> list[str]:
    with desk.sessions() as session:
        return list(session.scalars(select(Event.kind).order_by(Event.id)))


def assert_kept_as_a_note(desk: Desk, number: str, sender: str) -> None:
    with desk.sessions() as session:
        request = desk.request(number)
        event = session.scalar(select(Event).where(Event.kind == "stranger_mail")
                               .order_by(Event.id.desc()))
        assert event.request_id == request.id and event.actor == sender
        assert session.get(Message, event.message_id).request_id == request.id


def assert_told_once(mail: dict, staff: str) -> str:
    """The assignee got one notice of the stranger's mail; its text."""
    (notice,) = mail.pop(staff)
    assert "постороннего отправителя" in notice.parsed()["Subject"]
    return body(notice)


# ---------------------------------------------------------------- confirmations and refusals

def test_a_stranger_cannot_close_someone_elses_request(desk):
    """`Re: [ТП-…] Спасибо, помогло` from the stranger's own address, a brand-new mail."""
    staff, request = resolved_request(desk)
    before = state(desk)
    desk.write(STRANGER, f"Re: [{request.number}] Спасибо, помогло", "Спасибо, помогло!")
    desk.run()

    assert state(desk) == before  # still waiting for the customer's confirmation
    mail = desk.inbox()
    text = assert_told_once(mail, staff)
    assert STRANGER in text and "ничего не изменило" in text
    assert not mail  # the customer is not told it was confirmed, the stranger gets nothing
    assert "confirmed" not in kinds(desk)
    assert_kept_as_a_note(desk, request.number, STRANGER)


def test_a_stranger_in_the_thread_cannot_refuse_a_solution(desk):
    """Even with the thread headers (he was in Cc, say): "не помогло" reopens nothing."""
    staff, request = resolved_request(desk)
    before = state(desk)
    solution = desk.sink.messages[-1]
    desk.reply(solution, STRANGER, "Не помогло, ошибка осталась.")
    desk.run()
    assert state(desk) == before
    mail = desk.inbox()
    assert_told_once(mail, staff)
    assert not mail


def test_a_stranger_cannot_reopen_a_closed_request(desk):
    staff, request = resolved_request(desk)
    desk.reply(desk.sink.messages[-1], CUSTOMER, "Помогло, спасибо!")
    desk.run()
    desk.new_mail()
    before = state(desk)
    assert before["status"] == "closed"
    desk.write(STRANGER, f"Re: [{request.number}] Снова не работает", "Проблема вернулась.")
    desk.run()
    assert state(desk) == before
    mail = desk.inbox()
    assert_told_once(mail, staff)
    assert not mail


def test_a_registered_colleague_may_confirm_for_the_requester(desk):
    """A CRM contact of the same organisation acts for it (the regulation's customer is the
    company)."""
    desk.load_crm("organization;contact_name;contact_email\n"
                  f"ООО «Завод»;Петрова Анна Сергеевна;{COLLEAGUE}\n")
    staff, request = resolved_request(desk)
    desk.write(COLLEAGUE, f"Re: [{request.number}] Решение", "Помогло, спасибо!")
    desk.run()
    assert (desk.request().status, desk.request().confirmation) == ("closed", "confirmed")


def test_a_contact_of_another_organisation_is_a_stranger_to_this_request(desk):
    staff, request = resolved_request(desk)
    before = state(desk)
    desk.write("petrov@old.example", f"Re: [{request.number}]", "Помогло, спасибо!")
    desk.run()
    assert state(desk) == before
    mail = desk.inbox()
    assert_told_once(mail, staff)
    assert not mail


def test_a_sender_who_named_the_company_himself_cannot_act_for_it(desk):
    """He answers his own contact question naming ООО «Завод» (his request opens, as the
    regulation's intake says), but that makes him no registered contact of the company."""
    staff, request = resolved_request(desk)
    before = state(desk, request.number)
    desk.write(STRANGER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    ask = desk.inbox()[STRANGER][0]
    desk.reply(ask, STRANGER, "Организация: ООО «Завод»\nФИО: Мальков Роман Игоревич")
    desk.run()
    with desk.sessions() as session:
        contact = session.scalar(select(Contact).where(Contact.email == STRANGER))
        assert contact.source == "mail" and not contact.registered
    desk.new_mail()

    desk.write(STRANGER, f"Re: [{request.number}] Решение", "Помогло, спасибо!")
    desk.run()
    assert state(desk, request.number) == before
    mail = desk.inbox()
    assert_told_once(mail, staff)
    assert not mail


# ---------------------------------------------------------------- contact details

def test_a_stranger_cannot_answer_someone_elses_contact_question(desk):
    """The unknown sender is asked for company and ФИО; a stranger's answer sets nothing and
    creates no CRM contact."""
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?")
    desk.run()
    request = desk.request()
    assert request.status == "awaiting_contact_info"
    desk.new_mail()
    before = state(desk)
    desk.write(STRANGER, f"Re: [{request.number}] Вопрос",
               "Организация: ООО Тепловые сети\nФИО: Смирнова Анна Сергеевна")
    desk.run()
    assert state(desk) == before
    with desk.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Contact)
                              .where(Contact.email.in_(["someone@gmail.example", STRANGER]))) == 0
    mail = desk.inbox()
    assert_told_once(mail, TP1)  # unassigned: the ТП1 group hears of it
    assert not mail


def test_a_name_that_is_not_a_name_is_neither_stored_nor_echoed(desk):
    """"ФИО: …" with a link and digits is no ФИО: the customer is asked again (ТП1 told), and
    nothing the sender wrote comes back in our mail."""
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?")
    desk.run()
    ask = desk.inbox()["someone@gmail.example"][0]
    desk.reply(ask, "someone@gmail.example",
               "Организация: ООО Тепловые сети\nФИО: Купите 100 лицензий на http://evil.example")
    desk.run()
    request = desk.request()
    assert request.status == "awaiting_contact_info" and request.requester_name == ""
    mail = desk.inbox()
    assert "someone@gmail.example" not in mail  # no acknowledgement quoting the "name"
    (notice,) = mail[TP1]
    assert "ФИО" in notice.parsed()["Subject"] or "ФИО" in body(notice)
    with desk.sessions() as session:
        assert session.scalar(select(Contact).where(Contact.email == "someone@gmail.example")) is None


# ---------------------------------------------------------------- numbers only from headers

def test_a_request_number_in_the_body_does_not_file_a_new_mail_into_that_request(desk):
    staff, request = resolved_request(desk)
    before = state(desk, request.number)
    desk.write(STRANGER, "Помогло", f"По запросу {request.number}: спасибо, помогло!")
    desk.run()
    assert state(desk, request.number) == before
    newest = desk.request()
    assert newest.number != request.number and newest.requester_email == STRANGER
    with desk.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(
            Message.request_id == request.id, Message.sender == STRANGER)) == 0


# ---------------------------------------------------------------- no reflection

def test_the_acknowledgement_never_reflects_a_strangers_subject_or_name(desk):
    """A forged From: makes us write to a victim: nothing the forger wrote comes along."""
    victim = "victim@gmail.example"
    desk.write(victim, "Выигрыш 1000000 руб: http://evil.example/prize", "Заберите приз: http://evil.example",
               name="Заберите приз на evil.example")
    desk.run()
    (ask,) = desk.inbox()[victim]
    parsed = ask.parsed()
    assert parsed["Subject"] == f"Re: [{desk.request().number}] Обращение в техническую поддержку"
    for part in (parsed.get_body(("plain",)), parsed.get_body(("html",))):
        assert "evil" not in part.get_content() and "приз" not in part.get_content()
    assert desk.request().requester_name == ""


def test_an_unregistered_sender_of_a_known_company_gets_a_neutral_subject(desk):
    """Identified by the mail domain and a valid signature: acknowledged with the level and his
    name, but not with the subject he wrote (he is not a registered contact)."""
    desk.write("novikov@zavod.example", "Перепривязка: см. http://evil.example",
               "Как выполнить перепривязку?\n\n--\nНовиков Николай Николаевич")
    desk.run()
    (ack,) = desk.inbox()["novikov@zavod.example"]
    assert ack.parsed()["Subject"] == f"Re: [{desk.request().number}] Обращение в техническую поддержку"
    assert "Новиков Николай Николаевич" in body(ack) and "ОП1" in body(ack)


def test_a_registered_contact_gets_the_subject_he_wrote(desk):
    desk.write(CUSTOMER, "Перепривязка ключа", "Как выполнить перепривязку?")
    desk.run()
    (ack,) = desk.inbox()[CUSTOMER]
    assert ack.parsed()["Subject"] == f"Re: [{desk.request().number}] Перепривязка ключа"


# ---------------------------------------------------------------- backscatter

def test_automatic_mail_to_unknown_addresses_is_capped_across_all_senders(desk):
    """Forged senders, one mail each: past the hourly cap the requests are registered, nothing
    automatic goes out, and ТП1 is told once; registered contacts are still answered."""
    desk.config = with_overrides(desk.config, support={"unknown_auto_reply_limit_per_hour": 3})
    for n in range(5):
        desk.write(f"victim{n}@gmail.example", "Вопрос", "Как выполнить привязку?")
    desk.run()
    mail = desk.inbox()
    assert sorted(a for a in mail if a.startswith("victim")) == [f"victim{n}@gmail.example" for n in range(3)]
    (cap,) = [m for m in mail[TP1] if "Предел" in m.parsed()["Subject"]]
    assert "3 в час" in body(cap)
    with desk.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Request)) == 5

    desk.clock.advance(minutes=10)
    desk.write("victim9@gmail.example", "Вопрос", "Как выполнить привязку?")
    desk.write(CUSTOMER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    mail = desk.inbox()
    assert "victim9@gmail.example" not in mail and CUSTOMER in mail
    assert not [m for m in mail.get(TP1, []) if "Предел" in m.parsed()["Subject"]]  # once an hour

    desk.clock.advance(minutes=51)  # the first three have left the hour
    desk.write("victim10@gmail.example", "Вопрос", "Как выполнить привязку?")
    desk.run()
    assert "victim10@gmail.example" in desk.inbox()


# ---------------------------------------------------------------- invalid From:

def test_an_invalid_from_is_kept_never_answered_and_tp1_is_told(desk):
    """Two addresses in From: (and a Sender: naming a customer): a request nobody can be
    answered for; no mail goes to any address in it."""
    desk.write("victim@gmail.example", "Вопрос", "Как выполнить привязку?",
               from_header="victim@gmail.example, other@gmail.example",
               headers={"Sender": CUSTOMER, "Reply-To": "third@gmail.example"})
    desk.run()
    request = desk.request()
    assert request.requester_email == "" and request.status == "awaiting_contact_info"
    mail = desk.inbox()
    assert set(mail) == {TP1}
    assert "Адрес отправителя недействителен" in body(mail[TP1][0])


def test_an_invalid_from_in_a_thread_changes_nothing(desk):
    staff, request = resolved_request(desk)
    before = state(desk)
    desk.reply(desk.sink.messages[-1], CUSTOMER, "Помогло, спасибо!",
               from_header=f"{CUSTOMER}, {STRANGER}")
    desk.run()
    assert state(desk) == before
    mail = desk.inbox()
    assert "недействительного адреса" in assert_told_once(mail, staff)
    assert not mail


# ---------------------------------------------------------------- floods

def test_a_strangers_flood_is_kept_whole_but_staff_are_told_once_an_hour(desk):
    staff, request = resolved_request(desk)
    for n in range(4):
        desk.write(STRANGER, f"Re: [{request.number}] Помогло", f"Помогло {n}")
    desk.run()
    mail = desk.inbox()
    assert_told_once(mail, staff)
    assert not mail
    assert kinds(desk).count("stranger_mail") == 4
    with desk.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.kind == "staff_stranger")) == 1


# ---------------------------------------------------------------- what counts as a name, an address

@pytest.mark.parametrize("text, valid", [
    ("Иванов Иван Иванович", True), ("Салтыков-Щедрин Михаил Евграфович", True),
    ("Иванов И. И.", True), ("Иванов И.И.", True), ("Ivan Petrov", True),
    ("Иванов", False), ("Иванов Иван Иванович Петрович Сидоров", False),
    ("Купите 100 лицензий", False), ("http://evil.example Иван", False), ("evil.example Иван", False),
    ("Иван <script>", False), ("И. И.", False), ("Иванов " + "И" * 100, False),
])
def test_a_full_name_is_two_to_four_words_of_letters(text, valid):
    from mailbot.rules.contact import is_full_name

    assert is_full_name(text) is valid


def test_a_request_taken_by_phone_needs_one_valid_address(desk, monkeypatch, capsys):
    """Staff type the address; one that could carry a second recipient is refused."""
    from mailbot.cli.main import EX_USAGE, main

    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    for bad in ("ivanov@zavod.example, mallory@evil.example", "ivanov@zavod.example bcc:x@y.example"):
        assert main(["requests", "new", "--channel", "phone", "--org", "ORG-1",
                     "--text", "Не работает", "--email", bad]) == EX_USAGE
    assert "not one plain e-mail address" in capsys.readouterr().err
    assert main(["requests", "new", "--channel", "phone", "--org", "ORG-1",
                 "--contact", "Иванов Иван Иванович", "--text", "Как выполнить привязку?",
                 "--email", "Ivanov@Zavod.example"]) == 0
    assert desk.request().requester_email == "ivanov@zavod.example"


def test_a_contact_linked_by_staff_may_act_for_the_organisation(desk):
    """#организация vouches for the requester: his contact becomes 'staff', registered."""
    staff = desk.add_staff("sidorov", years=6)
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?")
    desk.run()
    notice = desk.mail_to(TP1)
    desk.reply(notice, staff, "#организация Завод")
    desk.run()
    with desk.sessions() as session:
        contact = session.scalar(select(Contact).where(Contact.email == "someone@gmail.example"))
        assert contact.source == "staff" and contact.registered
