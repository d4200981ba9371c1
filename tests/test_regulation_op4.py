"""ОП4, the ТП1 → ТП2 protocol of the regulation (section 5), by mail alone.

The bot reads two Dovecot accounts: the support address and the ТП2 address. Customers, ТП1 and
ТП2 only exchange real mail through them and the SMTP sink; every step is checked on the
requests' timelines and in the known-error database.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from mailbot.config import MailboxConfig, with_overrides
from mailbot.register.models import Escalation, Event, Incident, IncidentHistory, Message, Request
from tests.mailflow import Desk, body
from tests.servers import Received

CUSTOMER = "ivanov@zavod.example"
TP1 = "tp1@tecon.example"
DDI = (("msinfo32.txt", b"OS Name: Windows Server 2019\n"), ("arm.log", b"ERROR 0x1F driver\n"),
       ("screen.png", b"\x89PNG fake screenshot"))
PROBLEM = ("Сбой: АРМ не запускается",
           "После обновления драйверов АРМ диспетчера не запускается, критический сбой.")


class Op4Desk(Desk):
    """The desk with the ТП2 mailbox: an account of its own on Dovecot, read by the bot."""

    def __init__(self, database_url, dovecot, mailbox, sink) -> None:
        super().__init__(database_url, dovecot, mailbox, sink)
        self.tp2 = dovecot.new_mailbox("tp2")
        self.config = with_overrides(
            self.config, support={"tp2_address": self.tp2.user},
            imap={"tp2": MailboxConfig(username=self.tp2.user, password=self.tp2.password)})

    def write_tp2(self, sender: str, subject: str, body: str, **kwargs) -> str:
        """A mail to the ТП2 address, delivered into the ТП2 mailbox as our MX does."""
        support, self.mailbox = self.mailbox, self.tp2
        try:
            return self.write(sender, subject, body, **kwargs)
        finally:
            self.mailbox = support

    def reply_tp2(self, to: Received, sender: str, body: str, **kwargs) -> str:
        return self.write_tp2(sender, f"Re: {to.parsed()['Subject']}", body, reply_to=to, **kwargs)


@pytest.fixture
def desk(database_url, dovecot, mailbox, smtp_sink) -> Op4Desk:
    desk = Op4Desk(database_url, dovecot, mailbox, smtp_sink)
    desk.load_crm()
    return desk


def use_cli(desk: Op4Desk, monkeypatch) -> None:
    """`mailbot` commands work on the desk's register and addresses; the desk runs on the real
    clock, as they do."""
    from mailbot.clock import Clock

    desk.clock = Clock()
    for key, value in {"DATABASE_URL": desk.config.database.url, "SUPPORT_ADDRESS": desk.mailbox.user,
                       "SUPPORT_TP1_ADDRESS": TP1, "SUPPORT_TP2_ADDRESS": desk.tp2.user}.items():
        monkeypatch.setenv(f"MAILBOT_{key}", value)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)


def staff(desk: Op4Desk) -> tuple[str, str]:
    """ТП1 (7 years, may handle ОП3/ОП4) and ТП2."""
    return desk.add_staff("kuznetsov", years=7), desk.add_staff("petrova", years=9, tier="tp2")


def op3_request(desk: Op4Desk, files=DDI) -> tuple[Request, Received]:
    """An open ОП3 request with the customer's ДДИ; the notification ТП1 got."""
    desk.write(CUSTOMER, *PROBLEM, attachments=files)
    desk.run()
    request = desk.request()
    assert (request.status, request.level) == ("open", 3)
    return request, desk.mail_to("kuznetsov@tecon.example")


def op4_of(desk: Op4Desk, request: Request) -> Request:
    with desk.sessions() as session:
        return session.scalars(select(Request).where(Request.parent_id == request.id)).one()


def timeline(desk: Op4Desk, request: Request) -> list[str]:
    with desk.sessions() as session:
        return [e.kind if not e.to_status else f"{e.kind}:{e.to_status}" for e in session.scalars(
            select(Event).where(Event.request_id == request.id).order_by(Event.id))]


def escalation(desk: Op4Desk, op4: Request) -> Escalation:
    with desk.sessions() as session:
        return session.scalars(select(Escalation).where(Escalation.request_id == op4.id)).one()


def incident(desk: Op4Desk, number: str) -> Incident:
    with desk.sessions() as session:
        return session.scalars(select(Incident).where(Incident.number == number)).one()


def subject(message: Received) -> str:
    return message.parsed()["Subject"]


def files(message: Received) -> list[str]:
    return sorted(part.get_filename() for part in message.parsed().iter_attachments())


# ---------------------------------------------------------------- the whole cycle

def test_op4_by_command_from_op3_to_tp2_incident_solution_relay_confirmation_result_status(desk):
    """§5 whole: ОП3 → #оп4 → ТП2 creates the incident → [INC-…] → solution → ТП1 relays →
    the customer confirms → result notice to ТП2 → ТП2 sets the incident's status."""
    tp1, tp2 = staff(desk)
    request, notice = op3_request(desk)

    # ТП1: #оп4 — the bot writes to ТП2 itself
    desk.clock.advance(minutes=10)
    desk.reply(notice, tp1, "#оп4\nПереустановили драйвер ключа и перезагрузили сервер, не помогло.")
    desk.run()
    to_tp2 = desk.mail_to(tp2).parsed()
    assert "ООО «Завод»" in to_tp2["Subject"] and request.number in to_tp2["Subject"]
    assert to_tp2["Reply-To"] == desk.tp2.user
    text = to_tp2.get_body(("plain",)).get_content()
    assert "АРМ диспетчера не запускается" in text  # the customer's description
    assert "Переустановили драйвер ключа" in text  # what ТП1 tried
    assert sorted(p.get_filename() for p in to_tp2.iter_attachments()) == sorted(n for n, _ in DDI)
    assert desk.inbox().get(CUSTOMER) is None  # nothing to the customer
    op4 = op4_of(desk, request)
    assert (op4.level, op4.status, op4.requester_email) == (4, "open", "")
    assert op4.number in to_tp2["Subject"]
    assert desk.request(request.number).status == "escalated_op4"
    clock = escalation(desk, op4)
    assert (clock.status, clock.answered_at) == ("sent", None)
    assert clock.due_at - clock.sent_at == timedelta(hours=3)  # ТП2's 3-hour clock (working time)
    assert op4.due_at == clock.due_at

    # ТП2: a new incident; the answer to ТП1 carries its number in brackets
    desk.clock.advance(minutes=50)
    tp2_mail = desk.sink.messages[-1]
    desk.reply_tp2(tp2_mail, tp2, "#новый инцидент АРМ не запускается после обновления драйверов\n"
                                  "Воспроизвели на стенде, ищем решение; срок — до завтра.")
    desk.run()
    answer = desk.mail_to(tp1)
    assert "[INC-000001]" in subject(answer) and request.number in subject(answer)
    assert "Воспроизвели на стенде" in body(answer)
    created = incident(desk, "INC-000001")
    assert created.status == "investigating"
    assert "АРМ диспетчера не запускается" in created.symptoms
    clock = escalation(desk, op4)
    assert clock.status == "answered" and clock.answered_at == clock.sent_at + timedelta(minutes=50)
    assert desk.request(op4.number).incident_id == desk.request(request.number).incident_id == created.id

    # ТП2 documents the solution: stored on the incident and sent to ТП1
    desk.reply_tp2(tp2_mail, tp2, "#решение\nУстановите драйвер ключа версии 3.3 и перезапустите "
                                  "службу АРМ.")
    desk.run()
    solution_to_tp1 = desk.mail_to(tp1)
    assert "[INC-000001]" in subject(solution_to_tp1) and "Решение ТП2" in subject(solution_to_tp1)
    assert "#инцидент INC-000001" in body(solution_to_tp1)
    assert incident(desk, "INC-000001").solution.startswith("Установите драйвер ключа версии 3.3")
    assert incident(desk, "INC-000001").status == "solved"
    assert desk.request(op4.number).status == "resolved"

    # ТП1 relays it to the customer
    desk.reply(solution_to_tp1, tp1, "#инцидент INC-000001")
    desk.run()
    to_customer = desk.mail_to(CUSTOMER)
    assert "[INC-000001]" in subject(to_customer) and request.number in subject(to_customer)
    assert "драйвер ключа версии 3.3" in body(to_customer)
    assert desk.request(request.number).status == "resolved"

    # the customer confirms: the request closes, ТП2 gets the result notice by itself
    desk.reply(to_customer, CUSTOMER, "Помогло, спасибо!")
    desk.run()
    mail = desk.inbox()
    assert desk.request(request.number).status == "closed"
    assert desk.request(op4.number).status == "closed"
    (result,) = mail[tp2]
    assert "[INC-000001]" in subject(result) and "проблема решена" in subject(result)
    assert "#статус закрыт" in body(result)
    assert all("[INC-000001]" in subject(m) for ms in mail.values() for m in ms)  # to anyone
    clock = escalation(desk, op4)
    assert clock.status == "closed" and clock.result_sent_at is not None

    # ТП2 sets the incident's status
    desk.reply_tp2(result, tp2, "#статус закрыт")
    desk.run()
    assert incident(desk, "INC-000001").status == "closed"
    assert desk.new_mail() == []  # nothing to anyone for a status

    assert timeline(desk, request) == [
        "created", "identified", "status:open", "assigned", "message_in", "status:escalated_op4",
        "escalated", "incident", "tp2_answer", "tp2_answer", "message_in", "incident",
        "first_reaction", "status:resolved", "message_in", "confirmed", "status:closed",
        "result_to_tp2"]
    assert timeline(desk, op4) == [
        "created", "status:open", "escalated", "message_in", "incident", "first_reaction",
        "tp2_answer", "message_in", "status:resolved", "tp2_answer", "status:closed",
        "result_to_tp2", "message_in"]
    with desk.sessions() as session:
        history = [(h.kind, h.actor) for h in session.scalars(
            select(IncidentHistory).order_by(IncidentHistory.id))]
    assert history == [("created", "petrova"), ("linked", "petrova"), ("linked", "petrova"),
                       ("solution", "petrova"), ("status", "petrova"), ("status", "petrova")]


# ---------------------------------------------------------------- ТП1 writes to ТП2 by hand

def test_op4_by_a_mail_to_the_tp2_address_forwarded_by_hand(desk):
    """§5: ТП1 forwards the customer's mail to the ТП2 address, the organisation and the request
    number in the subject; the bot passes it on to ТП2 with the request's ДДИ and its own files,
    and the similar known incidents."""
    tp1, tp2 = staff(desk)
    desk.add_incident("INC-000045", "АРМ не запускается после обновления драйверов",
                      "Сбой при запуске АРМ диспетчера", "Переустановите драйвер ключа 3.2.")
    request, _ = op3_request(desk, files=DDI[:2])
    desk.write_tp2(tp1, f"Fwd: ООО Завод, {request.number}: АРМ не запускается",
                   "Коллеги, просим помочь: переустановка драйвера не помогла.\n\n"
                   "-------- Пересылаемое сообщение --------\nОт: Иванов Иван Иванович\n"
                   "После обновления драйверов АРМ диспетчера не запускается.",
                   attachments=(("screen.png", b"\x89PNG error window"),))
    desk.run()

    to_tp2 = desk.mail_to(tp2)
    text = body(to_tp2)
    assert "переустановка драйвера не помогла" in text and "Пересылаемое сообщение" in text
    assert files(to_tp2) == ["arm.log", "msinfo32.txt", "screen.png"]
    assert "[INC-000045]" in text  # similar known incidents, for ТП2
    op4 = op4_of(desk, request)
    assert op4.status == "open" and desk.request(request.number).status == "escalated_op4"
    assert "escalated" in timeline(desk, request)

    # "we know this": ТП2 answers with the known incident's number in brackets in the subject
    desk.write_tp2(tp2, f"Re: [INC-000045] {subject(to_tp2)}", "Известная ошибка, решение в базе.",
                   reply_to=to_tp2)
    desk.run()
    answer = desk.mail_to(tp1)
    assert "[INC-000045]" in subject(answer) and "Известная ошибка" in body(answer)
    assert "#инцидент INC-000045" in body(answer)
    assert desk.request(request.number).incident_id == incident(desk, "INC-000045").id
    assert escalation(desk, op4).answered_at is not None


def test_a_subject_without_the_organisation_is_refused_and_the_mail_kept_on_the_request(desk):
    """§5: «В теме письма обязательно указать название организации»: the sender is told what is
    missing and what a valid subject looks like; the mail stays on the request; nothing goes to ТП2."""
    tp1, tp2 = staff(desk)
    request, _ = op3_request(desk)
    desk.write_tp2(tp1, f"{request.number}: АРМ не запускается", "Просим помочь.")
    desk.run()

    (refusal,) = desk.inbox()[tp1]
    text = body(refusal)
    assert "ОП4 не открыт" in subject(refusal) and request.number in subject(refusal)
    assert "нет названия организации" in text and "ООО «Завод»" in text and "Завод Ромашка" in text
    assert f"ООО «Завод» — {request.number}" in text  # what a valid subject looks like
    assert desk.request(request.number).status == "open"
    with desk.sessions() as session:
        kept = session.scalars(select(Message).where(Message.subject.like("%АРМ не запускается"),
                                                     Message.sender == tp1)).one()
        assert kept.request_id == request.id
        assert not session.scalars(select(Request).where(Request.level == 4)).all()
    assert "escalation_refused" in timeline(desk, request)


def test_a_subject_without_the_request_number_is_refused(desk):
    """§5: «…а также id-номер запроса»: no number, no ОП4; the mail is kept."""
    tp1, tp2 = staff(desk)
    op3_request(desk)
    desk.write_tp2(tp1, "ООО «Завод»: АРМ не запускается", "Просим помочь.")
    desk.run()

    (refusal,) = desk.inbox()[tp1]
    assert "нет номера запроса" in body(refusal)
    with desk.sessions() as session:
        kept = session.scalars(select(Message).where(Message.sender == tp1)).one()
        assert kept.request_id is None and kept.inbound_id is not None


@pytest.mark.parametrize("how", ["mail", "command", "cli"])
def test_op4_only_from_an_open_op3_request(desk, how, capsys, monkeypatch):
    """§5: «ОП4 проводится только на основе открытых заявок на уровне ОП3»: an ОП1 request is
    refused, by mail to the ТП2 address, by #оп4 and from the command line alike."""
    from mailbot.cli.main import EX_USAGE, main

    use_cli(desk, monkeypatch)
    tp1, tp2 = staff(desk)
    desk.write(CUSTOMER, "Настройка АРМ", "Как настроить АРМ диспетчера?", attachments=DDI)
    desk.run()
    request = desk.request()
    assert request.level == 1
    notice = desk.mail_to(tp1)
    if how == "mail":
        desk.write_tp2(tp1, f"ООО «Завод» {request.number}", "Просим помочь.")
    elif how == "command":
        desk.reply(notice, tp1, "#оп4")
    else:
        assert main(["requests", "command", request.number, "--as", "kuznetsov", "#оп4"]) == EX_USAGE
        assert "ОП4 проводится только на основе открытых заявок на уровне ОП3" in capsys.readouterr().err
    desk.run()
    if how != "cli":
        (refusal,) = desk.inbox()[tp1]
        assert "ОП4 проводится только на основе открытых заявок на уровне ОП3" in body(refusal)
        assert "ОП1" in body(refusal)
    assert desk.new_mail() == []
    assert desk.request(request.number).status == "open"
    with desk.sessions() as session:
        assert not session.scalars(select(Request).where(Request.level == 4)).all()


def test_a_closed_op3_request_cannot_be_escalated(desk):
    tp1, tp2 = staff(desk)
    request, notice = op3_request(desk)
    desk.reply(notice, tp1, "#закрыть\nКлиент решил проблему сам.")
    desk.run()
    desk.new_mail()
    desk.write_tp2(tp1, f"ООО «Завод» {request.number}", "Просим помочь.")
    desk.run()
    (refusal,) = desk.inbox()[tp1]
    assert "открытых заявок на уровне ОП3" in body(refusal) and "статус «закрыт»" in body(refusal)


# ---------------------------------------------------------------- ДДИ

def test_missing_ddi_is_named_and_one_command_asks_the_customer_for_it(desk):
    """§5: ТП1 first gets the ДДИ (information about the system, log files, a screenshot): what is
    missing is named, #дди asks the customer, and with the files ОП4 opens."""
    tp1, tp2 = staff(desk)
    request, notice = op3_request(desk, files=DDI[2:])
    desk.reply(notice, tp1, "#оп4")
    desk.run()
    (refusal,) = desk.inbox()[tp1]
    text = body(refusal)
    assert "нет: информация о системе" in text and "нет: лог-файлы" in text
    assert "есть: скриншот" in text and "screen.png" in text
    assert "#дди" in text

    desk.reply(refusal, tp1, "#дди\nБез этих файлов ТП2 не сможет воспроизвести ошибку.")
    desk.run()
    ask = desk.mail_to(CUSTOMER)
    assert request.number in subject(ask)
    assert "информация о системе" in body(ask) and "лог-файлы" in body(ask)
    assert "скриншот" not in body(ask)
    assert "не сможет воспроизвести" in body(ask)
    assert desk.request(request.number).status == "awaiting_customer"
    assert "ddi_asked" in timeline(desk, request)

    desk.reply(ask, CUSTOMER, "Высылаем.", attachments=DDI[:2])
    desk.run()
    desk.reply(desk.mail_to(tp1), tp1, "#оп4")
    desk.run()
    assert files(desk.mail_to(tp2)) == sorted(n for n, _ in DDI)
    assert desk.request(request.number).status == "escalated_op4"


def test_a_mail_to_tp2_without_ddi_is_refused_with_what_is_missing(desk):
    tp1, tp2 = staff(desk)
    request, _ = op3_request(desk, files=())
    desk.write_tp2(tp1, f"ООО «Завод» {request.number}", "Просим помочь.",
                   attachments=(("arm.log", b"log"),))
    desk.run()
    (refusal,) = desk.inbox()[tp1]
    assert "нет: информация о системе" in body(refusal) and "нет: скриншот" in body(refusal)
    assert "есть: лог-файлы — arm.log" in body(refusal)
    assert desk.request(request.number).status == "open"


# ---------------------------------------------------------------- after the answer

def escalated(desk: Op4Desk) -> tuple[str, str, Request, Received]:
    """An ОП4 under way with INC-000045 linked by ТП2; the ТП2 answer ТП1 got."""
    tp1, tp2 = staff(desk)
    desk.add_incident("INC-000045", "АРМ не запускается после обновления драйверов",
                      "Сбой при запуске АРМ", "Переустановите драйвер ключа 3.2.")
    request, notice = op3_request(desk)
    desk.reply(notice, tp1, "#оп4")
    desk.run()
    desk.reply_tp2(desk.mail_to(tp2), tp2, "#инцидент INC-000045\nЭто известная ошибка.")
    desk.run()
    return tp1, tp2, request, desk.mail_to(tp1)


def test_replies_are_threaded_by_the_incident_tag_as_well_as_by_the_request_number(desk):
    """§5: once an incident is linked, mail that names only it in brackets finds its request:
    the customer's on the customer's request, ТП2's on the ОП4 request."""
    tp1, tp2, request, answer = escalated(desk)
    desk.write(CUSTOMER, "Вопрос по [INC-000045]", "Когда будет решение?")
    desk.run()
    with desk.sessions() as session:
        assert session.scalar(select(Request).order_by(Request.id.desc())).level == 4  # no new one
        question = session.scalars(select(Message).where(Message.subject == "Вопрос по [INC-000045]")).one()
        assert question.request_id == request.id
    notice = desk.mail_to(tp1)
    assert "[INC-000045]" in subject(notice) and "Когда будет решение" in body(notice)

    desk.write_tp2(tp2, "[INC-000045] уточнение", "Решение будет завтра к 12:00.")
    desk.run()
    assert "Решение будет завтра" in body(desk.mail_to(tp1))
    op4 = op4_of(desk, request)
    with desk.sessions() as session:
        assert session.scalars(select(Message).where(Message.subject == "[INC-000045] уточнение")
                               ).one().request_id == op4.id


def test_a_solution_that_did_not_help_goes_back_to_tp2(desk):
    """§5: the result at the customer's goes to ТП2 either way: "не помогло" reopens the ОП4."""
    tp1, tp2, request, answer = escalated(desk)
    desk.reply(answer, tp1, "#инцидент INC-000045")
    desk.run()
    desk.reply(desk.mail_to(CUSTOMER), CUSTOMER, "Не помогло, ошибка та же.")
    desk.run()
    mail = desk.inbox()
    (notice,) = mail[tp2]
    assert "НЕ ПОМОГЛО" in subject(notice) and "ошибка та же" in body(notice)
    op4 = op4_of(desk, request)
    assert desk.request(op4.number).status == "open"
    assert desk.request(request.number).status == "open"
    assert escalation(desk, op4).status == "answered"


def test_tp1_relays_tp2s_words_to_the_customer(desk):
    """§5: ТП1 relays ТП2's answer: ТП2's words pasted into the solution are not held back as
    internal text (only the bot's cards to staff are)."""
    tp1, tp2, request, answer = escalated(desk)
    desk.reply(answer, tp1, "#решено\nЭто известная ошибка.")
    desk.run()
    assert "Это известная ошибка." in body(desk.mail_to(CUSTOMER))


def test_tp2_commands_are_checked_before_anything_is_done(desk):
    tp1, tp2, request, answer = escalated(desk)
    op4 = op4_of(desk, request)
    desk.write_tp2(tp2, f"Re: [{op4.number}]", "#решение\n#статус почти решён")
    desk.run()
    (errors,) = desk.inbox()[tp2]
    assert "Команды ТП2 не выполнены" in subject(errors)
    assert "#решение: напишите решение ниже команды" in body(errors) and "#статус почти решён" in body(errors)
    assert incident(desk, "INC-000045").solution == "Переустановите драйвер ключа 3.2."


def test_tp2_and_the_known_errors_from_the_command_line(desk, capsys, monkeypatch):
    """Every ТП2 step by mail is also a command: `requests command --as <ТП2>` acts on the ОП4,
    `kb solution` documents a solution and sends it to ТП1."""
    from mailbot.cli.main import main

    use_cli(desk, monkeypatch)
    tp1, tp2 = staff(desk)
    request, notice = op3_request(desk)
    desk.reply(notice, tp1, "#оп4")
    desk.run()
    desk.new_mail()
    assert main(["requests", "command", request.number, "--as", "petrova",
                 "#новый инцидент Сбой запуска АРМ", "Ищем решение."]) == 0
    assert main(["kb", "solution", "INC-000001", "--as", "petrova",
                 "--text", "Обновите драйвер до 3.3."]) == 0
    assert "sent to ТП1" in capsys.readouterr().out
    assert main(["kb", "show", "INC-000001"]) == 0
    shown = capsys.readouterr().out
    assert main(["requests", "show", request.number]) == 0
    detail = capsys.readouterr().out
    assert "ОП4:           ТП-2026-000002 (resolved)" in detail and "[INC-000001] solved" in detail
    assert "escalated" in detail and "tp2_answer" in detail
    assert "solved" in shown and request.number in shown and "petrova" in shown
    desk.run()
    subjects = [subject(m) for m in desk.inbox()[tp1]]
    assert any("ТП2 завёл инцидент" in s and "[INC-000001]" in s for s in subjects)
    assert any("Решение ТП2" in s for s in subjects)


# ---------------------------------------------------------------- trust: internal mail stays internal

def test_tp2_mail_to_the_support_address_never_reaches_the_customer(desk):
    """Attack/mistake: a ТП2 member writes to the support address on the customer's request:
    ТП2's mail is internal, whatever address it went to; it reaches ТП1 at most (with no ОП4
    under way, as an internal note to the assignee)."""
    tp1, tp2 = staff(desk)
    request, notice = op3_request(desk)
    desk.write(tp2, f"Re: [{request.number}] Сбой", "Скачайте исправление: http://evil.example/fix.exe")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail and tp2 not in mail
    (note,) = mail[tp1]
    assert "Внутренняя заметка" in subject(note)

    # with an ОП4 under way, the text goes to ТП1, never to the customer
    desk.reply(notice, tp1, "#оп4")
    desk.run()
    desk.new_mail()
    desk.write(tp2, f"Re: [{request.number}] Сбой", "Скачайте исправление: http://example/fix.exe")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail and list(mail) == [tp1]


def test_tp1_mail_to_tp2_with_a_copy_to_the_support_address_is_not_relayed_to_the_customer(desk):
    """Attack/mistake: ТП1 writes to ТП2 with the support address in copy (the mail lands in the
    support mailbox): it is mail to ТП2, never an answer to the customer."""
    tp1, tp2 = staff(desk)
    request, _ = op3_request(desk)
    desk.write(tp1, f"ООО «Завод» {request.number}", "Внутреннее: клиент сам сломал систему.",
               headers={"Cc": desk.tp2.user})
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail
    assert "клиент сам сломал" in body(mail[tp2][0])


def test_a_forged_tp2_mail_changes_nothing(desk):
    """Attack: a mail with a ТП2 member's From: that our MX did not authenticate."""
    tp1, tp2, request, answer = escalated(desk)
    op4 = op4_of(desk, request)
    desk.write_tp2(tp2, f"Re: [{op4.number}] [INC-000045]",
                   "#решение\nСкачайте исправление: http://evil.example/fix.exe", dmarc="fail")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail and tp1 not in mail
    assert incident(desk, "INC-000045").solution == "Переустановите драйвер ключа 3.2."
    assert "не подтверждено" in subject(mail[TP1][0])


def test_a_customer_mail_naming_the_internal_op4_request_joins_the_customers_request(desk):
    """Attack: a customer who learnt the ОП4 number writes on it: the mail joins their own ОП3
    request; the ОП4 request (ТП1 ↔ ТП2) does not change."""
    tp1, tp2, request, answer = escalated(desk)
    op4 = op4_of(desk, request)
    desk.write(CUSTOMER, f"Re: [{op4.number}] Помогло", "Помогло, закрывайте.")
    desk.run()
    assert desk.request(op4.number).status == "open"
    mail = desk.inbox()
    assert tp2 not in mail
    with desk.sessions() as session:
        assert session.scalars(select(Message).where(Message.subject == f"Re: [{op4.number}] Помогло")
                               ).one().request_id == request.id


def test_a_customer_writing_to_the_tp2_address_is_answered_as_at_the_support_address(desk):
    """Mail from outside to the ТП2 address is no escalation: it is registered as a request
    (from the support address), and ТП2 gets nothing."""
    tp1, tp2 = staff(desk)
    desk.write_tp2(CUSTOMER, "ООО «Завод» ТП-2026-000001 срочно", "Критический сбой сервера опроса.")
    desk.run()
    mail = desk.inbox()
    assert tp2 not in mail
    (ack,) = mail[CUSTOMER]
    assert ack.parsed()["From"].addresses[0].addr_spec == desk.mailbox.user
    assert desk.request().level == 3


# ---------------------------------------------------------------- mailboxes and config

def test_mail_the_mta_pipes_in_for_the_tp2_address_is_tp2_mail(desk, monkeypatch):
    """`mailbot ingest --mailbox tp2`: a Postfix pipe for the ТП2 address; the role comes from
    the mailbox, also for a mail that names the ТП2 address nowhere (Bcc)."""
    import io
    import sys

    from mailbot.cli.main import main
    from tests.mailflow import mx_trace

    tp1, tp2 = staff(desk)
    request, _ = op3_request(desk)
    raw = mx_trace(tp1, "pass") + (
        f"From: {tp1}\r\nTo: undisclosed-recipients:;\r\nSubject: ООО «Завод» {request.number}\r\n"
        f"Message-ID: <bcc-1@tecon.example>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\nПросим помочь: АРМ не запускается.\r\n").encode()
    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    assert main(["ingest", "--mailbox", "tp2"]) == 0
    desk.run()
    assert "Просим помочь" in body(desk.mail_to(tp2))
    assert desk.request(request.number).status == "escalated_op4"


def test_the_tp2_mailbox_is_configured_beside_the_support_one(tmp_path):
    from mailbot.config import ConfigError, load_config

    path = tmp_path / "mailbot.toml"
    path.write_text('[imap]\nhost = "imap.example.ru"\nusername = "support@example.ru"\n'
                    'password = "s"\n[imap.tp2]\nusername = "tp2@example.ru"\npassword = "t"\n'
                    '[ddi]\nrequired = ["logs", "screenshot"]\nlogs = ["*.log", "*.trace"]\n',
                    encoding="utf-8")
    config = load_config(path, environ={"MAILBOT_IMAP_TP2_PASSWORD": "from-env"})
    (support_role, support), (tp2_role, tp2) = config.imap.mailboxes()
    assert (support_role, support.username) == ("support", "support@example.ru")
    assert (tp2_role, tp2.username, tp2.password, tp2.host) == ("tp2", "tp2@example.ru",
                                                                "from-env", "imap.example.ru")
    assert config.ddi.required == ("logs", "screenshot") and config.ddi.logs == ("*.log", "*.trace")
    assert [role for role, _ in load_config(None, environ={}).imap.mailboxes()] == ["support"]
    path.write_text('[ddi]\nrequired = ["dump"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="ddi.required"):
        load_config(path, environ={})


def test_the_development_mail_server_has_both_mailboxes(database_url):
    """`mailbot run` without an IMAP server reads the support and the ТП2 address of the embedded
    development server (every address is a mailbox there)."""
    import asyncio

    from imapclient import IMAPClient

    from mailbot.clock import Clock
    from mailbot.config import load_config
    from mailbot.daemon import Daemon
    from mailbot.register import db
    from mailbot.register.models import Inbound
    from mailbot.transport.devmail import DevMailServer
    from tests.servers import LOCALHOST, free_port

    config = with_overrides(load_config(None, environ={}), database={"url": database_url},
                            dev={"imap_port": free_port(), "smtp_port": free_port(),
                                 "http_port": free_port()})
    server = DevMailServer(config)
    running = server.start()
    try:
        assert [(role, account.username) for role, account in running.imap.mailboxes()] == [
            ("support", "support@localhost"), ("tp2", "tp2@localhost")]
        with IMAPClient(LOCALHOST, port=config.dev.imap_port, ssl=False) as client:
            client.login("tp2@localhost", config.dev.password)
            client.append("INBOX", b"From: someone@example.org\r\nTo: tp2@localhost\r\n"
                                   b"Subject: test\r\nMessage-ID: <dev-tp2@example.org>\r\n\r\nhi\r\n")
        engine = db.make_engine(database_url)
        db.init_schema(engine)
        asyncio.run(Daemon(running, db.make_sessionmaker(engine), Clock()).run_once())
        with db.make_sessionmaker(engine)() as session:
            assert session.scalars(select(Inbound.mailbox)).all() == ["tp2"]
    finally:
        server.stop()
