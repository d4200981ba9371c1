"""The SLA clock keeps watch over the regulation's norms (issue 18; docs/workflow.md, "The SLA clock").

Each test moves the desk's clock (no sleeping) and runs one pass of the clock as the
daemon's scheduler does (``run_sla``); everything goes by real mail through Dovecot,
PostgreSQL and the SMTP sink. The team: sidorov (ТП1) reports to boss, boss to chief.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import func, select

from mailbot.cli.admin import edit_staff
from mailbot.daemon import Daemon
from mailbot.register import db
from mailbot.register.models import Delivery, Escalation, Event, Outbox, Request, SlaStep, Staff
from mailbot.scheduler import SlaClock, SlaRun, make_scheduler, run_sla
from mailbot.sla.deadlines import Deadlines
from mailbot.workflow.actions import Workflow
from mailbot.workflow.ladder import take_steps
from tests.mailflow import Desk, body
from tests.slaclock import BOSS, CHIEF, CUSTOMER, HEADS, TP1, TP2, WORKER, configure, msk, team, tick


def taken(result: SlaRun) -> list[tuple[str, str]]:
    return [(step.clock, step.step) for step in result.steps]


def steps(desk: Desk) -> list[tuple[str, str, list[str]]]:
    with desk.sessions() as session:
        return [(s.clock, s.step, sorted(s.recipients))
                for s in session.scalars(select(SlaStep).order_by(SlaStep.id))]


def sla_events(desk: Desk) -> list[str]:
    with desk.sessions() as session:
        return list(session.scalars(select(Event.kind).where(Event.kind.like("sla%"))
                                    .order_by(Event.id)))


def new_request(desk: Desk, subject: str = "Перепривязка ключа",
                text: str = "Как выполнить перепривязку ключа?", at: datetime | None = None) -> Request:
    if at is not None:
        desk.clock.set(at)
    desk.write(CUSTOMER, subject, text)
    desk.run()
    desk.new_mail()
    return desk.request()


def answer(desk: Desk, request: Request, text: str, at: datetime | None = None) -> None:
    """sidorov replies to the request by mail (its number in the subject)."""
    if at is not None:
        desk.clock.set(at)
    desk.write(WORKER, f"Re: [{request.number}] {request.subject}", text)
    desk.run()


# ---------------------------------------------------------------- the reaction norm, step by step

def test_op1_reaction_ladder_warning_breach_escalation_each_once(desk):
    """ОП1 (20 min): a warning to the assignee at 75 % (15 min), the breach to the assignee and
    their supervisor at 20 min, the next level up an hour later; each step once, each an event."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 25, 10, 0))
    assert request.due_at == msk(2026, 11, 25, 10, 20)

    assert taken(tick(desk, msk(2026, 11, 25, 10, 14))) == []
    assert taken(tick(desk, msk(2026, 11, 25, 10, 15))) == [("reaction", "warning")]
    warning = desk.mail_to(WORKER)
    assert "истекает через 5 мин" in warning.parsed()["Subject"]
    assert taken(tick(desk)) == []  # once: the next pass at the same moment does nothing
    assert desk.new_mail() == []

    assert taken(tick(desk, msk(2026, 11, 25, 10, 20))) == [("reaction", "breach")]
    (breach,) = desk.new_mail()
    assert sorted(breach.rcpt_tos) == [BOSS, WORKER]

    assert taken(tick(desk, msk(2026, 11, 25, 11, 19))) == []
    assert taken(tick(desk, msk(2026, 11, 25, 11, 20))) == [("reaction", "escalation")]
    assert desk.mail_to(CHIEF).parsed()["Subject"].startswith(f"[{request.number}] Эскалация")
    assert taken(tick(desk, msk(2026, 11, 25, 15, 0))) == []
    assert steps(desk) == [("reaction", "warning", [WORKER]),
                           ("reaction", "breach", [BOSS, WORKER]),
                           ("reaction", "escalation", [CHIEF])]
    assert sla_events(desk) == ["sla_reaction_warning", "sla_reaction_breach",
                                "sla_reaction_escalation"]


def test_escalation_mail_is_short_and_actionable(desk):
    """Request, customer, level, how late, the last thing that happened, how to act by reply."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 25, 10, 0))
    tick(desk, msk(2026, 11, 25, 10, 45))
    mail = desk.mail_to(BOSS).parsed()
    text = mail.get_body(("plain",)).get_content()
    assert mail["Subject"] == f"[{request.number}] Просрочена реакция на 25 мин (ОП1)"
    assert mail["Reply-To"] == desk.mailbox.user  # a reply with commands reaches the bot
    assert "ООО «Завод»" in text and "Иванов Иван Иванович" in text  # the customer
    assert "ОП1" in text and "20 минут" in text  # level and norm
    assert "25.11.2026 10:20 (московское время)" in text  # deadline in Moscow time
    assert "Просрочено на: 25 мин рабочего времени" in text
    assert "Последнее:     25.11.2026 10:00 — назначен исполнитель (system)" in text
    assert "Как выполнить перепривязку ключа?" in text  # what the customer asked
    assert "#заметка" in text and "#назначить" in text


def test_a_boss_replying_with_commands_acts_on_the_request(desk):
    """The breach mail is a staff notification: a reply with commands acts on the request."""
    team(desk)
    new_request(desk, at=msk(2026, 11, 25, 10, 0))
    desk.add_staff("petrova", years=4)
    tick(desk, msk(2026, 11, 25, 10, 25))
    breach = desk.mail_to(BOSS)
    desk.reply(breach, BOSS, "#назначить petrova")
    desk.run()
    with desk.sessions() as session:
        assert session.get(Staff, desk.request().assignee_id).login == "petrova"
    assert "petrova@tecon.example" in desk.inbox()  # the new assignee is told


def test_the_first_human_answer_stops_the_clock_an_acknowledgement_or_a_note_does_not(desk):
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "#заметка\nКлиент звонил, уточнил версию.", at=msk(2026, 11, 25, 10, 10))
    assert taken(tick(desk, msk(2026, 11, 25, 10, 20))) == [("reaction", "breach")]

    answer(desk, request, "Выполните Сервис → Перепривязка.", at=msk(2026, 11, 25, 10, 30))
    assert desk.request().waiting_since is None
    assert desk.request().first_reaction_at == msk(2026, 11, 25, 10, 30)
    assert taken(tick(desk, msk(2026, 11, 25, 12, 0))) == []  # no escalation: answered


def test_a_forged_staff_answer_does_not_stop_the_clock(desk):
    """Attack: a stranger forges the assignee's From: (DMARC fails at our MX) and 'answers';
    nothing reaches the customer, the clock keeps running and the breach goes out."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 25, 10, 0))
    desk.clock.set(msk(2026, 11, 25, 10, 5))
    desk.write(WORKER, f"Re: [{request.number}] {request.subject}", "Всё решено, закрываем.",
               dmarc="fail")
    desk.run()
    assert CUSTOMER not in desk.inbox()
    assert desk.request().first_reaction_at is None
    assert taken(tick(desk, msk(2026, 11, 25, 10, 20))) == [("reaction", "breach")]


def test_a_strangers_answer_in_the_thread_does_not_stop_the_clock(desk):
    """Attack: someone who is neither staff nor the customer's organisation writes into the
    request ("ответ специалиста"): a note for the assignee, and the clock keeps running."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 25, 10, 0))
    desk.clock.set(msk(2026, 11, 25, 10, 5))
    desk.write("helpdesk@evil.example", f"Re: [{request.number}] {request.subject}",
               "Специалист поддержки: ваш вопрос решён, запрос закрыт.")
    desk.run()
    assert CUSTOMER not in desk.inbox()
    assert (desk.request().first_reaction_at, desk.request().status) == (None, "open")
    assert taken(tick(desk, msk(2026, 11, 25, 10, 20))) == [("reaction", "breach")]


def test_steps_superseded_while_no_daemon_ran_are_skipped(desk):
    """After an outage only the latest due step goes out: no warning after the breach."""
    team(desk)
    new_request(desk, at=msk(2026, 11, 25, 10, 0))
    assert taken(tick(desk, msk(2026, 11, 25, 10, 50))) == [("reaction", "breach")]
    assert taken(tick(desk, msk(2026, 11, 25, 10, 51))) == []
    assert taken(tick(desk, msk(2026, 11, 26, 9, 0))) == [("reaction", "escalation")]


def test_an_unassigned_request_warns_tp1_and_breaches_to_the_heads_of_support(desk):
    configure(desk, supervisor_addresses=(HEADS,))
    new_request(desk, at=msk(2026, 11, 25, 10, 0))  # nobody on the rota
    tick(desk, msk(2026, 11, 25, 10, 15))
    assert desk.mail_to(TP1)
    tick(desk, msk(2026, 11, 25, 10, 20))
    (breach,) = desk.new_mail()
    assert sorted(breach.rcpt_tos) == [HEADS, TP1]
    assert taken(tick(desk, msk(2026, 11, 25, 11, 30))) == [("reaction", "escalation")]
    assert desk.new_mail() == []  # nobody above the heads: the step is recorded, no mail


def test_heads_of_support_are_the_last_level_of_every_chain(desk):
    configure(desk, supervisor_addresses=(HEADS,))
    desk.add_staff("boss", years=20, department="Руководство")
    desk.add_staff("sidorov", years=7)
    with desk.sessions.begin() as session:
        edit_staff(session, "sidorov", supervisor="boss")
    new_request(desk, at=msk(2026, 11, 25, 10, 0))
    tick(desk, msk(2026, 11, 25, 10, 20))
    assert sorted(desk.new_mail()[0].rcpt_tos) == [BOSS, WORKER]
    tick(desk, msk(2026, 11, 25, 11, 20))
    assert desk.mail_to(HEADS)


# ---------------------------------------------------------------- the calendar

def test_a_weekend_does_not_count(desk):
    """ОП1 on Friday 17:55: 5 minutes on Friday, 15 on Monday: due Monday 09:15."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 27, 17, 55))
    assert request.due_at == msk(2026, 11, 30, 9, 15)
    assert taken(tick(desk, msk(2026, 11, 28, 12, 0))) == []  # Saturday
    assert taken(tick(desk, msk(2026, 11, 30, 9, 9))) == []
    assert taken(tick(desk, msk(2026, 11, 30, 9, 10))) == [("reaction", "warning")]
    assert taken(tick(desk, msk(2026, 11, 30, 9, 15))) == [("reaction", "breach")]


def test_a_russian_public_holiday_does_not_count(desk):
    """ОП1 on Tuesday 3 November 2026, 17:50; the 4th is Unity Day: due Thursday 09:10."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 3, 17, 50))
    assert request.due_at == msk(2026, 11, 5, 9, 10)
    assert taken(tick(desk, msk(2026, 11, 4, 12, 0))) == []
    assert taken(tick(desk, msk(2026, 11, 5, 9, 5))) == [("reaction", "warning")]


def test_a_moved_working_saturday_counts(desk):
    """Saturday 1 November 2025 was a working day (for Monday the 3rd): ОП1 from Friday 17:50
    is due on Saturday 09:10, and the breach goes out that Saturday."""
    team(desk)
    desk.clock.set(msk(2025, 10, 31, 17, 50))
    desk.write("petrov@old.example", "Перепривязка", "Как выполнить перепривязку ключа?")
    desk.run()
    desk.new_mail()
    request = desk.request()
    assert (request.status, request.due_at) == ("open", msk(2025, 11, 1, 9, 10))
    assert taken(tick(desk, msk(2025, 11, 1, 9, 10))) == [("reaction", "breach")]
    assert taken(tick(desk, msk(2025, 11, 1, 10, 10))) == [("reaction", "escalation")]


# ---------------------------------------------------------------- level changes and pauses

def test_a_level_change_moves_the_deadline_and_starts_a_fresh_ladder(desk):
    """#уровень ОП3 after the ОП1 warning: the deadline is counted from the opening with the
    ОП3 norm (12:00), the old ladder is done with, the new one warns at 11:30."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 25, 10, 0))
    tick(desk, msk(2026, 11, 25, 10, 15))
    answer(desk, request, "#уровень ОП3", at=msk(2026, 11, 25, 10, 16))
    desk.new_mail()
    assert desk.request().due_at == msk(2026, 11, 25, 12, 0)
    assert taken(tick(desk, msk(2026, 11, 25, 10, 20))) == []
    assert taken(tick(desk, msk(2026, 11, 25, 11, 30))) == [("reaction", "warning")]
    assert taken(tick(desk, msk(2026, 11, 25, 12, 0))) == [("reaction", "breach")]
    assert "(ОП3)" in desk.mail_to(BOSS).parsed()["Subject"]


def test_waiting_for_contact_details_pauses_the_reaction_clock(desk):
    """The reaction clock starts when the request is opened; meanwhile ТП1 is told after an
    hour of working time that the customer has not given their company and name."""
    team(desk)
    desk.clock.set(msk(2026, 11, 25, 10, 0))
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?")
    desk.run()
    ask = desk.inbox()["someone@gmail.example"][0]
    assert desk.request().status == "awaiting_contact_info"
    assert taken(tick(desk, msk(2026, 11, 25, 10, 59))) == []
    assert taken(tick(desk, msk(2026, 11, 25, 11, 0))) == [("contact_info", "breach")]
    notice = desk.mail_to(TP1).parsed()
    assert "не сообщил организацию и ФИО" in notice["Subject"]
    assert "#организация" in notice.get_body(("plain",)).get_content()

    desk.clock.set(msk(2026, 11, 25, 11, 30))
    desk.reply(ask, "someone@gmail.example", "Организация: ООО Тепловые сети\nФИО: Смирнова Анна Сергеевна")
    desk.run()
    request = desk.request()
    assert request.status == "open"
    assert (request.opened_at, request.due_at) == (msk(2026, 11, 25, 11, 30), msk(2026, 11, 25, 11, 50))
    assert "11:50" in body(desk.mail_to("someone@gmail.example"))  # the acknowledgement says so
    assert taken(tick(desk, msk(2026, 11, 25, 11, 50))) == [("reaction", "breach")]


def test_a_request_reopened_by_the_customer_gets_a_fresh_reaction_ladder(desk):
    """The customer's "не помогло" after an answer: the customer waits again, a new cycle."""
    team(desk)
    request = new_request(desk, at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "Выполните Сервис → Перепривязка.", at=msk(2026, 11, 25, 10, 5))
    relay = desk.mail_to(CUSTOMER)
    assert taken(tick(desk, msk(2026, 11, 25, 10, 25))) == []

    desk.clock.set(msk(2026, 11, 25, 10, 30))
    desk.reply(relay, CUSTOMER, "Не помогло, ошибка та же.")
    desk.run()
    desk.new_mail()
    request = desk.request()
    assert (request.status, request.waiting_since, request.due_at) == (
        "open", msk(2026, 11, 25, 10, 30), msk(2026, 11, 25, 10, 50))
    assert taken(tick(desk, msk(2026, 11, 25, 10, 45))) == [("reaction", "warning")]
    assert taken(tick(desk, msk(2026, 11, 25, 10, 50))) == [("reaction", "breach")]
    assert request.first_reaction_at == msk(2026, 11, 25, 10, 5)  # the report's first reaction


def test_waiting_for_files_from_the_customer_is_their_turn(desk):
    """ТП1 asks for logs (an answer): no clock runs until the customer sends them."""
    team(desk)
    request = new_request(desk, "Сбой АРМ", "АРМ не запускается, критический сбой.",
                          at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "Пришлите, пожалуйста, лог-файлы и скриншот ошибки.",
           at=msk(2026, 11, 25, 10, 30))
    relay = desk.mail_to(CUSTOMER)
    assert taken(tick(desk, msk(2026, 11, 27, 17, 0))) == []  # two days later: nothing
    desk.clock.set(msk(2026, 11, 30, 9, 0))
    desk.reply(relay, CUSTOMER, "Логи во вложении.", attachments=(("arm.log", b"error 42\n"),))
    desk.run()
    assert desk.request().due_at == msk(2026, 11, 30, 11, 0)  # ОП3: two hours from the files


# ---------------------------------------------------------------- the other clocks

def test_an_op4_request_is_watched_by_tp2s_answer_not_by_a_reaction_clock(desk):
    """ОП4's "first reaction within 3 hours" is ТП2's answer to the escalation (its own clock):
    an ОП4 request opened by the escalation gets no customer reaction clock of its own."""
    team(desk)
    parent = new_request(desk, "Сбой АРМ", "АРМ не запускается, критический сбой.",
                         at=msk(2026, 11, 25, 10, 0))
    with desk.sessions.begin() as session:
        flow = Workflow(session, desk.config, msk(2026, 11, 25, 10, 30))
        child = flow.create_request(channel="email", subject="ОП4", email=CUSTOMER, name="",
                                    thread_message_id=None, level=4)
        child.parent_id = parent.id
        session.flush()
        flow.start_reaction_clock(child)
        assert (child.opened_at, child.waiting_since) == (None, None)


def add_escalation(desk: Desk, request: Request, sent: datetime, due: datetime) -> int:
    """An ОП4 escalation as the ОП4 workflow writes it (status 'sent')."""
    with desk.sessions.begin() as session:
        row = Escalation(request_id=request.id, subject=f"ООО «Завод» {request.number} сбой АРМ",
                         status="sent", sent_at=sent, due_at=due)
        session.add(row)
        session.flush()
        return row.id


def test_tp2_answer_to_an_op4_escalation_within_3_hours(desk):
    """ТП2's 3 hours: warning to ТП2 and the assignee at 75 %, the breach to ТП2, the assignee
    and the supervisor, the next level up an hour later; an answer stops it."""
    team(desk)
    request = new_request(desk, "Сбой АРМ", "АРМ не запускается, критический сбой.",
                          at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "Собираем ДДИ, передаём в ТП2.", at=msk(2026, 11, 25, 10, 10))
    desk.new_mail()
    add_escalation(desk, request, msk(2026, 11, 25, 10, 30), msk(2026, 11, 25, 13, 30))

    assert taken(tick(desk, msk(2026, 11, 25, 12, 44))) == []
    assert taken(tick(desk, msk(2026, 11, 25, 12, 45))) == [("op4_answer", "warning")]
    (warning,) = desk.new_mail()
    assert sorted(warning.rcpt_tos) == sorted([TP2, WORKER])
    assert "ООО «Завод»" in body(warning) and "сбой АРМ" in body(warning)
    assert taken(tick(desk, msk(2026, 11, 25, 13, 30))) == [("op4_answer", "breach")]
    (breach,) = desk.new_mail()
    assert sorted(breach.rcpt_tos) == sorted([BOSS, TP2, WORKER])
    assert "Просрочен ответ ТП2 по ОП4" in breach.parsed()["Subject"]
    assert taken(tick(desk, msk(2026, 11, 25, 14, 30))) == [("op4_answer", "escalation")]
    assert desk.mail_to(CHIEF)


def test_an_answered_escalation_stops_the_tp2_clock(desk):
    team(desk)
    request = new_request(desk, "Сбой АРМ", "АРМ не запускается, критический сбой.",
                          at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "Передаём в ТП2.", at=msk(2026, 11, 25, 10, 10))
    escalation = add_escalation(desk, request, msk(2026, 11, 25, 10, 30), msk(2026, 11, 25, 13, 30))
    with desk.sessions.begin() as session:
        row = session.get(Escalation, escalation)
        row.status, row.answered_at = "answered", msk(2026, 11, 25, 12, 0)
    assert taken(tick(desk, msk(2026, 11, 25, 16, 0))) == []


def test_an_unconfirmed_op2_delivery_reaches_the_assignee_and_the_supervisor(desk):
    """ОП2 needs a confirmed delivery: a working day unconfirmed is a breach (assignee and
    supervisor), the next level up an hour later; a confirmed one is not watched."""
    team(desk)
    request = new_request(desk, "Нужен патч", "Пришлите патч 2.4.1.", at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "Патч во вложении.", at=msk(2026, 11, 25, 10, 10))
    with desk.sessions.begin() as session:
        session.add_all([Delivery(request_id=request.id, recipient=CUSTOMER, status="sent",
                                  created_at=msk(2026, 11, 25, 10, 10)),
                         Delivery(request_id=request.id, recipient=CUSTOMER, status="sent",
                                  created_at=msk(2026, 11, 25, 10, 10)),  # sent together
                         Delivery(request_id=request.id, recipient=CUSTOMER, status="confirmed",
                                  confirmed_by="mdn", confirmed_at=msk(2026, 11, 25, 10, 20),
                                  settled_at=msk(2026, 11, 25, 10, 20),
                                  created_at=msk(2026, 11, 25, 10, 0))])
    desk.new_mail()
    assert taken(tick(desk, msk(2026, 11, 25, 18, 0))) == []
    assert taken(tick(desk, msk(2026, 11, 26, 9, 10))) == [("delivery", "breach")]
    (breach,) = desk.new_mail()
    assert sorted(breach.rcpt_tos) == [BOSS, WORKER]
    assert "Доставка файлов (ОП2) не подтверждена" in breach.parsed()["Subject"]
    assert "25.11.2026 10:10 на ivanov@zavod.example" in body(breach)
    assert taken(tick(desk, msk(2026, 11, 26, 10, 10))) == [("delivery", "escalation")]
    assert desk.mail_to(CHIEF)


def test_a_solution_unconfirmed_gets_a_reminder_to_the_customer_then_the_assignee_is_told(desk):
    """A working day after the solution the customer is reminded (in their thread); after two,
    the assignee is told; the customer's confirmation ends it."""
    team(desk)
    request = new_request(desk, "Сбой АРМ", "АРМ не запускается, критический сбой.",
                          at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "#решено\nПереустановите драйвер ключа.", at=msk(2026, 11, 25, 10, 10))
    solution = desk.mail_to(CUSTOMER)
    assert desk.request().status == "resolved"

    assert taken(tick(desk, msk(2026, 11, 26, 9, 9))) == []
    assert taken(tick(desk, msk(2026, 11, 26, 9, 10))) == [("confirmation", "reminder")]
    reminder = desk.mail_to(CUSTOMER).parsed()
    assert reminder["In-Reply-To"] == solution.parsed()["Message-ID"]
    assert reminder["Auto-Submitted"] == "auto-replied"
    assert request.number in reminder["Subject"]
    assert "25.11.2026 мы отправили вам решение" in reminder.get_body(("plain",)).get_content()

    assert taken(tick(desk, msk(2026, 11, 26, 17, 10))) == [("confirmation", "breach")]
    (notice,) = desk.new_mail()
    assert notice.rcpt_tos == [WORKER]
    assert "Клиент не подтвердил решение" in notice.parsed()["Subject"]
    assert "#закрыть" in body(notice)

    desk.clock.set(msk(2026, 11, 26, 17, 30))
    desk.write(CUSTOMER, f"Re: [{request.number}] Сбой АРМ", "Помогло, спасибо!")
    desk.run()
    assert desk.request().status == "closed"
    assert taken(tick(desk, msk(2026, 11, 30, 12, 0))) == []


def test_a_second_solution_after_not_helped_gets_a_fresh_confirmation_ladder(desk):
    team(desk)
    request = new_request(desk, "Сбой АРМ", "АРМ не запускается, критический сбой.",
                          at=msk(2026, 11, 25, 10, 0))
    answer(desk, request, "#решено\nПереустановите драйвер ключа.", at=msk(2026, 11, 25, 10, 10))
    solution = desk.mail_to(CUSTOMER)
    tick(desk, msk(2026, 11, 26, 9, 10))
    desk.mail_to(CUSTOMER)
    desk.clock.set(msk(2026, 11, 26, 10, 0))
    desk.reply(solution, CUSTOMER, "Не помогло.")
    desk.run()
    answer(desk, request, "#решено\nОбновите службу до 2.5.", at=msk(2026, 11, 26, 10, 30))
    desk.new_mail()
    assert taken(tick(desk, msk(2026, 11, 27, 9, 30))) == [("confirmation", "reminder")]


# ---------------------------------------------------------------- restarts and two daemons

def test_a_restart_does_not_repeat_a_step(desk):
    """Steps are rows in the database: a new daemon (a restart) finds them taken."""
    team(desk)
    new_request(desk, at=msk(2026, 11, 25, 10, 0))
    tick(desk, msk(2026, 11, 25, 10, 20))
    desk.new_mail()
    engine = db.make_engine(desk.config.database.url)  # a fresh process's connections
    again = run_sla(Daemon(desk.config, db.make_sessionmaker(engine), desk.clock))
    assert again.steps == []
    engine.dispose()


def test_two_daemons_on_one_database_send_each_step_once(desk):
    """Two daemons (own engines, as two processes) run the clock at the same moments through a
    whole working day of requests: every step and every digest is mailed exactly once."""
    team(desk)
    configure(desk, supervisor_addresses=(HEADS,), digest_times=("14:00",))
    for minute in range(0, 60, 6):
        new_request(desk, f"Вопрос {minute}", "Как выполнить привязку?",
                    at=msk(2026, 11, 25, 10, minute))
    engines = [db.make_engine(desk.config.database.url) for _ in range(2)]
    clocks = [SlaClock(Daemon(desk.config, db.make_sessionmaker(e), desk.clock)) for e in engines]
    results: list[SlaRun] = []
    for minute in range(0, 241, 3):  # 10:00 to 14:00, the digest's slot
        desk.clock.set(msk(2026, 11, 25, 10, 0) + timedelta(minutes=minute))
        barrier = threading.Barrier(2)

        def run(clock: SlaClock) -> None:
            barrier.wait()
            results.append(clock.run())

        threads = [threading.Thread(target=run, args=(c,)) for c in clocks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for engine in engines:
        engine.dispose()

    with desk.sessions() as session:
        mails = session.execute(select(Outbox.request_id, Outbox.kind, func.count())
                                .where(Outbox.kind.in_(("staff_sla", "sla_digest")))
                                .group_by(Outbox.request_id, Outbox.kind)).all()
        step_rows = session.scalar(select(func.count()).select_from(SlaStep))
    per_request = [count for request_id, kind, count in mails if kind == "staff_sla"]
    assert len(per_request) == 10 and set(per_request) == {3}  # warning, breach, escalation
    assert step_rows == 30 == sum(len(r.steps) for r in results)
    digests = [count for _, kind, count in mails if kind == "sla_digest"]
    assert digests == [3]  # the 14:00 slot: boss, chief and the heads, once
    assert sum(r.digests or 0 for r in results) == 3


def test_passes_every_minute_read_only_recent_cycles_and_miss_nothing(desk):
    """A running daemon's passes read the cycles whose last step comes after the previous pass
    (every 15 minutes, all of them): minute by minute through a day, every step once, on time."""
    team(desk)
    for minute in range(0, 60, 6):
        new_request(desk, f"Вопрос {minute}", "Как выполнить привязку?",
                    at=msk(2026, 11, 25, 10, minute))
    clock = SlaClock(Daemon(desk.config, desk.sessions, desk.clock))
    taken_at: dict[tuple[str, str], list] = {}
    full = 0
    for minute in range(0, 180):
        desk.clock.set(msk(2026, 11, 25, 10, 0) + timedelta(minutes=minute))
        for step in clock.run().steps:
            taken_at.setdefault((step.clock, step.step), []).append(desk.clock.now())
        full += clock.last_full == desk.clock.now()
    assert {key: len(times) for key, times in taken_at.items()} == {
        ("reaction", "warning"): 10, ("reaction", "breach"): 10, ("reaction", "escalation"): 10}
    assert taken_at["reaction", "breach"] == [msk(2026, 11, 25, 10, 20) + timedelta(minutes=m)
                                              for m in range(0, 60, 6)]
    assert full == 12  # the first pass and one every 15 minutes; the other 168 read a window


def test_a_running_daemons_passes_take_what_full_scans_would_for_every_clock(desk):
    """Through two working days with every clock running, each pass of one daemon (reading only
    the steps that came due since its previous pass, most of the time) takes exactly the steps
    a full scan finds due at that moment."""
    team(desk)
    configure(desk, escalate_after=30)
    ids = {}
    for n, (subject, text) in enumerate((("Вопрос", "Как выполнить привязку?"),
                                         ("Нужен патч", "Пришлите патч 2.4.1."),
                                         ("Сбой АРМ", "АРМ не запускается, критический сбой."),
                                         ("Сбой сервера", "Сервер не запускается, критический сбой."))):
        ids[subject] = new_request(desk, subject, text, at=msk(2026, 11, 25, 10, 7 * n)).id
    answer(desk, desk.request(), "#решено\nПерезапустите службу.", at=msk(2026, 11, 25, 10, 30))
    with desk.sessions.begin() as session:
        session.add(Delivery(request_id=ids["Нужен патч"], recipient=CUSTOMER, status="sent",
                             created_at=msk(2026, 11, 25, 10, 40)))
        session.add(Escalation(request_id=ids["Сбой АРМ"], subject="ООО «Завод» сбой", status="sent",
                               sent_at=msk(2026, 11, 25, 16, 50), due_at=msk(2026, 11, 26, 10, 50)))
    desk.clock.set(msk(2026, 11, 25, 10, 50))
    desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?")
    desk.run()
    desk.new_mail()

    clock = SlaClock(Daemon(desk.config, desk.sessions, desk.clock))
    taken, windowed, passes = [], 0, 0
    moment = msk(2026, 11, 25, 10, 51)
    while moment < msk(2026, 11, 27, 12, 0):
        desk.clock.set(moment)
        with desk.sessions() as session:
            calendar = Workflow(session, desk.config, moment).calendar
            expected = {(d.running.request_id, d.running.clock, d.step) for d in
                        Deadlines(session, desk.config.sla, calendar, moment).due_steps()}
        windowed += clock._since(moment) is not None
        steps = clock.run().steps
        with desk.sessions() as session:
            numbers = dict(session.execute(select(Request.number, Request.id)).all())
        assert {(numbers[t.number], t.clock, t.step) for t in steps} == expected, moment
        taken += [(t.clock, t.step) for t in steps]
        passes += 1
        moment += timedelta(minutes=4)
    assert windowed > passes * 0.7  # the rest are full scans: the first and every 15 minutes
    assert sorted(set(taken)) == sorted({
        ("reaction", "warning"), ("reaction", "breach"), ("reaction", "escalation"),
        ("delivery", "breach"), ("delivery", "escalation"), ("confirmation", "reminder"),
        ("confirmation", "breach"), ("op4_answer", "warning"), ("op4_answer", "breach"),
        ("op4_answer", "escalation"), ("contact_info", "breach")})


def test_without_the_lock_the_step_rows_alone_keep_steps_single(desk):
    """Two passes that both found the same due steps (as if both held the lock): the second
    finds each step taken when it inserts its row, and sends nothing."""
    team(desk)
    new_request(desk, at=msk(2026, 11, 25, 10, 0))
    desk.clock.set(msk(2026, 11, 25, 10, 20))
    engines = [db.make_engine(desk.config.database.url) for _ in range(2)]
    sessions = [db.make_sessionmaker(e)() for e in engines]
    flows = [Workflow(s, desk.config, desk.clock.now()) for s in sessions]
    found = [Deadlines(s, desk.config.sla, f.calendar, desk.clock.now()).due_steps()
             for s, f in zip(sessions, flows)]
    assert [len(f) for f in found] == [1, 1]
    first = take_steps(flows[0], found[0])
    blocked: list = []
    second = threading.Thread(target=lambda: blocked.append(take_steps(flows[1], found[1])))
    second.start()  # waits on the first one's row until it commits
    sessions[0].commit()
    second.join()
    sessions[1].commit()
    assert len(first) == 1 and blocked == [[]]
    for session, engine in zip(sessions, engines):
        session.close()
        engine.dispose()
    with desk.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Outbox)
                              .where(Outbox.kind == "staff_sla")) == 1


def test_the_daemon_schedules_the_sla_clock_every_minute(desk):
    scheduler = make_scheduler(Daemon(desk.config, desk.sessions, desk.clock))
    job = scheduler.get_job("sla-clock")
    assert job is not None and job.trigger.interval == timedelta(minutes=1)
