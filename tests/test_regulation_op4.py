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
from mailbot.models import Escalation, Event, Incident, IncidentHistory, Message, Request

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
