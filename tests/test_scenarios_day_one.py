"""What a customer, a support team and an attacker meet on day one, mail by mail.

Scenarios found by walking the product as its users do (README walk-through, real clients,
the regulation's procedures, staff by mail, attacks), each through the real pipeline.
"""
from __future__ import annotations

import base64
import re

import pytest
from sqlalchemy import select

from mailbot.register.models import Message, Request
from tests.mailflow import Desk, body, mx_trace, staff_answer

CUSTOMER = "ivanov@zavod.example"


def opened(desk: Desk, subject: str = "Не запускается АРМ",
           text: str = "После обновления АРМ не запускается.") -> tuple[str, object]:
    """A customer's request and the staff member's notification of it."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, subject, text)
    desk.run()
    return staff, desk.inbox()[staff][0]


def phone_reply(desk: Desk, notice, sender: str, text: str, attribution: str) -> None:
    """A staff member's reply as a phone client writes it: the answer on top, the quote below."""
    quoted = "\n".join(f"> {line}" for line in body(notice).splitlines())
    msg = staff_answer(notice, sender, f"{text}\n\n{attribution}\n\n{quoted}\n",
                       subject=f"Re: {notice.parsed()['Subject']}")
    desk.dovecot.append(desk.mailbox.user, mx_trace(sender, "pass") + msg.as_bytes())


def test_staff_card_names_the_status_in_russian(desk: Desk):
    """The request card in every staff mail reads «Статус: открыт», not the database's 'open'."""
    _, notice = opened(desk)
    text = body(notice)
    assert "Статус:        открыт" in text
    assert "open" not in text.split("Исполнитель")[0]


def test_staff_answer_from_gmail_on_android_reaches_the_customer_without_the_attribution(desk: Desk):
    """Gmail for Android quotes under «ср, 25 нояб. 2026 г., 10:00 Поддержка <…>:» (no «пишет»)."""
    staff, notice = opened(desk)
    phone_reply(desk, notice, staff, "Переустановите драйвер ключа.",
                "ср, 25 нояб. 2026 г., 10:00 Техническая поддержка <support@tecon.example>:")
    desk.run()
    answer = body(desk.mail_to(CUSTOMER))
    assert "Переустановите драйвер ключа." in answer
    assert "нояб. 2026" not in answer and "support@tecon.example>:" not in answer


def test_impersonator_naming_a_customer_company_is_flagged_to_staff(desk: Desk):
    """Attack: a stranger's mail signed «ООО «Завод», Иванов Иван Иванович» asks for a licence.

    The regulation identifies a customer by the company and ФИО given, so the request opens;
    but the staff member must see that nothing vouches for the address, and that the CRM's
    Иванов writes from another one, before sending anything.
    """
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write("phish@evil.example", "Лицензия",
               "Пришлите файл лицензии.\n\nООО «Завод», Иванов Иван Иванович")
    desk.run()
    text = body(desk.inbox()[staff][0])
    assert "КЛИЕНТ НЕ ПОДТВЕРЖДЁН: адрес phish@evil.example не зарегистрирован в CRM" in text
    assert "В CRM Иванов Иван Иванович — это ivanov@zavod.example" in text


def test_registered_contact_and_colleague_from_the_company_domain_are_not_flagged(desk: Desk):
    """Customers the CRM vouches for (their address, or their company's mail domain) get no doubt."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "Вопрос", "Как настроить отчёт по авариям?")
    desk.write("sidorova@zavod.example", "Вопрос", "Как настроить отчёт?\n\nСидорова Анна Петровна")
    desk.run()
    notices = desk.inbox()[staff]
    assert len(notices) == 2
    assert not any("НЕ ПОДТВЕРЖДЁН" in body(notice) for notice in notices)


def test_a_forwarded_report_reaches_staff_whole(desk: Desk):
    """A customer forwards an operator's mail with one line of his own: the operator's report is
    the problem, so the notification shows it and the level is read from it."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "Fwd: АРМ",
               "Коллеги, пересылаю письмо от оператора.\n\n"
               "-------- Пересылаемое сообщение --------\n"
               "От: Оператор <operator@zavod.example>\nДата: 24.11.2026 18:00\nТема: АРМ\n\n"
               "Тренды пустые с утра, объекты красные.\n")
    desk.run()
    notice = desk.inbox()[staff][0]
    assert "Тренды пустые с утра, объекты красные." in body(notice)
    assert notice.parsed()["Subject"].startswith("[ТП-2026-000001] ОП3 ")


def test_a_forward_with_outlook_headers_is_kept_whole_too(desk: Desk):
    """Outlook forwards under a header block («От: … Отправлено: …»), the subject says «FW:»."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "FW: Сбой опроса",
               "Посмотрите, пожалуйста.\n\nОт: Оператор <operator@zavod.example>\n"
               "Отправлено: 24 ноября 2026 г. 18:00\nКому: Иванов\nТема: Сбой опроса\n\n"
               "Опрос контроллеров встал, данные не обновляются.\n")
    desk.run()
    assert "Опрос контроллеров встал" in body(desk.inbox()[staff][0])


def test_a_request_is_titled_without_the_prefixes_of_answers_and_forwards(desk: Desk):
    """«FW: Fwd:» and «Re:» are the mail programs', not the customer's words: the request, its
    notification and the acknowledgement are titled by what follows them."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "Re: FW: Fwd: Сбой опроса", "Опрос контроллеров встал, данные не обновляются.\n")
    desk.run()
    mail = desk.inbox()
    notice = mail[staff][0].parsed()["Subject"]
    assert notice.endswith("Новый запрос: Сбой опроса") and "FW" not in notice
    assert mail[CUSTOMER][0].parsed()["Subject"] == "Re: [ТП-2026-000001] Сбой опроса"
    assert desk.request().subject == "Сбой опроса"


def requests(desk: Desk) -> list[tuple[str, str]]:
    with desk.sessions() as session:
        return [(r.number, r.requester_email) for r in session.scalars(select(Request).order_by(Request.id))]


def test_a_mail_processed_after_the_customer_s_own_answer_to_it_joins_the_answer_s_request(desk: Desk):
    """A backlog is fetched (an outage, a restart) while the customer writes again: their new
    mail comes in live and is processed before the mail it answers. That mail, and a second
    answer to it, join the request the first answer opened: one request, not three."""
    desk.add_staff("sidorov", years=6)
    desk.load_crm()
    original = "<orig-1@zavod.example>"
    desk.write(CUSTOMER, "Re: Сбой опроса", "Добавлю: перезапуск сервера не помог.",
               headers={"In-Reply-To": original, "References": original})
    desk.run()
    desk.write(CUSTOMER, "Re: Сбой опроса", "И журнал пуст.",
               headers={"In-Reply-To": original, "References": original})
    desk.write(CUSTOMER, "Сбой опроса", "Опрос контроллеров встал.", written={"Message-ID": original})
    desk.run()
    assert requests(desk) == [("ТП-2026-000001", CUSTOMER)]
    with desk.sessions() as session:
        texts = session.scalars(select(Message.body).where(Message.direction == "in")).all()
    assert any("Опрос контроллеров встал." in text for text in texts) and len(texts) == 3


def test_someone_else_s_answer_written_ahead_does_not_draw_a_customer_s_mail_into_their_request(desk: Desk):
    """An attacker who guesses the Message-ID of a customer's next mail and answers it first:
    the customer's mail opens a request of its own, the attacker's learns nothing of it."""
    desk.add_staff("sidorov", years=6)
    desk.load_crm()
    original = "<guessable-20261125100000@zavod.example>"
    desk.write("stranger@evil.example", "Re: Сбой", "Пришлите лицензии.",
               headers={"In-Reply-To": original, "References": original})
    desk.run()
    desk.write(CUSTOMER, "Сбой опроса", "Опрос контроллеров встал.", written={"Message-ID": original})
    desk.run()
    assert [email for _, email in requests(desk)] == ["stranger@evil.example", CUSTOMER]


def test_confirmation_notice_keeps_its_lines_apart(desk: Desk):
    """The assignee's «Клиент подтвердил решение» for a request with an incident: the ОП4 line
    and the request card are separate paragraphs, not glued by the template."""
    staff, notice = opened(desk)
    desk.add_incident("INC-000045", "АРМ не запускается", "Сбой запуска", "Переустановите драйвер.")
    desk.reply(notice, staff, "#инцидент INC-000045")
    desk.run()
    desk.reply(desk.mail_to(CUSTOMER), CUSTOMER, "Помогло, спасибо!")
    desk.run()
    text = body(desk.inbox()[staff][0])
    assert "автоматически.\n\nЗапрос:" in text


def test_a_command_below_a_greeting_is_not_sent_to_the_customer(desk: Desk):
    """Staff: «Добрый день!» then «#решено» — the command is not on the first line. It must not
    reach the customer as text, nor leave the request unsolved silently: nothing is done and
    the staff member is told where commands go."""
    staff, notice = opened(desk)
    desk.reply(notice, staff, "Добрый день!\n#решено\nПереустановите драйвер.")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail
    (error,) = mail[staff]
    assert "#решено: команда должна стоять в первых строках письма" in body(error)
    assert desk.request().status == "open"


def test_an_internal_note_marked_below_the_salutation_stays_internal(desk: Desk):
    """«Коллеги,\\n#заметка\\n…» would have gone to the customer as an answer."""
    staff, notice = opened(desk)
    desk.reply(notice, staff, "Коллеги,\n#заметка\nклиент звонил, ругался.")
    desk.run()
    assert CUSTOMER not in desk.inbox()


def test_a_hash_comment_in_a_config_snippet_is_text(desk: Desk):
    """A solution quoting a config file ("# порт опроса", "#port=502") is sent as written."""
    staff, notice = opened(desk)
    desk.reply(notice, staff, "#решено\nДобавьте в konfig.ini:\n# порт опроса\n#port=502\nport=503")
    desk.run()
    assert "# порт опроса\n#port=502" in body(desk.mail_to(CUSTOMER))


def test_a_mistyped_command_is_explained_in_russian_with_the_likely_command(desk: Desk):
    """Staff: «#уровнь ОП2» (a typo). The error mail is the support team's language, names the
    command meant, and nothing is done."""
    staff, notice = opened(desk)
    desk.reply(notice, staff, "#уровнь ОП2")
    desk.run()
    text = body(desk.mail_to(staff))
    assert "#уровнь ОП2: неизвестная команда #уровнь (может быть, #уровень?)" in text
    assert desk.request().level == 3


def test_closing_a_closed_request_names_its_status_in_russian(desk: Desk):
    """Staff: «#закрыть» twice (two colleagues, or a resent mail)."""
    staff, notice = opened(desk)
    desk.reply(notice, staff, "#ЗАКРЫТЬ")
    desk.run()
    desk.new_mail()
    desk.reply(notice, staff, "#закрыть")
    desk.run()
    text = body(desk.mail_to(staff))
    assert "#закрыть: запрос сейчас в статусе «закрыт»: эта команда к нему не применима" in text


def test_staff_vouch_for_a_flagged_customer_with_the_organisation_command(desk: Desk):
    """A real customer writing from mail.ru: checked by phone, `#организация ORG-1` registers
    the address, and the next mail about the request carries no doubt."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write("petrova.a@mail.example", "Вопрос",
               "Как настроить отчёт по авариям?\n\nООО «Завод», Петрова Анна Сергеевна")
    desk.run()
    notice = desk.inbox()[staff][0]
    assert "#организация ORG-1: адрес станет контактом организации" in body(notice)
    desk.reply(notice, staff, "#организация ORG-1\nАнна Сергеевна, откройте Настройки → Отчёты.")
    desk.run()
    desk.new_mail()
    desk.write("petrova.a@mail.example", f"Re: [{desk.request().number}] Вопрос", "А где кнопка?")
    desk.run()
    assert "НЕ ПОДТВЕРЖДЁН" not in body(desk.inbox()[staff][0])


def test_a_forged_confirmation_does_not_close_someone_elses_request(desk: Desk):
    """Attack: «Помогло, спасибо!» with the requester's address forged in From: (our MX says
    dmarc=fail), the request number guessed. Nothing changes; the assignee is told it was forged."""
    staff, notice = opened(desk)
    desk.reply(notice, staff, "#решено\nПереустановите драйвер ключа.")
    desk.run()
    desk.new_mail()
    desk.write(CUSTOMER, "Re: [ТП-2026-000001] Не запускается АРМ", "Помогло, спасибо!", dmarc="fail")
    desk.run()
    assert desk.request().status == "resolved"
    mail = desk.inbox()
    assert CUSTOMER not in mail
    (told,) = mail[staff]
    assert "с подделанным адресом" in told.parsed()["Subject"]
    assert "dmarc=fail" in body(told)


def test_a_forged_new_request_is_not_echoed_to_the_customer_it_names(desk: Desk):
    """Attack: a mail forged as the customer's, its subject a phishing line. Our acknowledgement
    goes to the real customer: it must not carry the forger's words under our name."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "Срочно смените пароль: http://evil.example/login",
               "Проверьте учётную запись http://evil.example/login", dmarc="fail")
    desk.run()
    mail = desk.inbox()
    (ack,) = mail[CUSTOMER]
    assert "evil" not in ack.parsed()["Subject"] and "evil" not in body(ack)
    assert ack.parsed()["Subject"] == "Re: [ТП-2026-000001] Обращение в техническую поддержку"
    assert "АДРЕС ОТПРАВИТЕЛЯ ПОДДЕЛАН" in body(mail[staff][0])


def test_a_forged_new_request_is_not_echoed_by_later_automatic_mail(desk: Desk):
    """Attack, continued: the forged request is closed in a later batch. The closing notice goes
    to the real customer too: it must not bring the forger's subject back under our name."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "Срочно смените пароль: http://evil.example/login",
               "Проверьте учётную запись http://evil.example/login", dmarc="fail")
    desk.run()
    notice = desk.inbox()[staff][0]
    desk.new_mail()
    desk.reply(notice, staff, "#закрыть")
    desk.run()
    assert desk.request().status == "closed"
    (closing,) = desk.inbox()[CUSTOMER]
    assert "evil" not in closing.parsed()["Subject"] and "evil" not in body(closing)


def test_a_genuine_customer_mail_is_still_echoed(desk: Desk):
    """dmarc=pass (or no verdict of our MX at all): the customer's own subject comes back."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "Не запускается АРМ", "После обновления АРМ не запускается.", dmarc=None)
    desk.run()
    mail = desk.inbox()
    assert mail[CUSTOMER][0].parsed()["Subject"] == "Re: [ТП-2026-000001] Не запускается АРМ"
    assert "ПОДДЕЛАН" not in body(mail[staff][0])


def test_the_assignee_sees_a_colleagues_answer_to_their_customer(desk: Desk):
    """Two staff answer the same request: the colleague's answer reaches the customer, and the
    assignee is told what was sent (else they answer again, or contradict it, unaware)."""
    staff, notice = opened(desk)
    colleague = desk.add_staff("petrov", years=6)
    desk.reply(notice, colleague, "Переустановите драйвер ключа, версия 4.2.")
    desk.run()
    mail = desk.inbox()
    assert "версия 4.2" in body(mail[CUSTOMER][0])
    (told,) = mail[staff]
    assert "Petrov Сотрудник ответил(а) вашему клиенту" in told.parsed()["Subject"]
    assert "версия 4.2" in body(told)
    assert colleague not in mail


def test_the_assignee_is_not_told_of_their_own_answer(desk: Desk):
    staff, notice = opened(desk)
    desk.reply(notice, staff, "Переустановите драйвер ключа.")
    desk.run()
    assert staff not in desk.inbox()


def _q(text: str) -> str:
    """``text`` as one RFC 2047 Q-encoded word (UTF-8), as a mail client writes it."""
    return "=?UTF-8?Q?" + "".join(f"={b:02X}" for b in text.encode()) + "?="


def _b(data: bytes) -> str:
    return f"=?UTF-8?B?{base64.b64encode(data).decode()}?="


def test_a_line_break_inside_an_encoded_subject_keeps_the_words_apart(desk: Desk):
    """A subject folded by the client, one of its encoded words holding a CR/LF: the line break
    is whitespace between words (RFC 5322), never glue; adjacent encoded words are one text
    (RFC 2047). The request, the acknowledgement and the staff notice read «Сбой опроса котельной»."""
    staff = desk.add_staff("sidorov", years=6)
    subject = f"{_q('Сбой' + chr(13) + chr(10) + 'опроса')}\n {_b(' котель'.encode())}{_b('ной'.encode())}"
    desk.write(CUSTOMER, "", "Опрос встал.", written={"Subject": subject})
    desk.run()
    assert desk.request().subject == "Сбой опроса котельной"
    mail = desk.inbox()
    assert mail[CUSTOMER][0].parsed()["Subject"] == "Re: [ТП-2026-000001] Сбой опроса котельной"
    assert "Тема:          Сбой опроса котельной\n" in body(mail[staff][0])


def test_a_display_name_cut_inside_a_character_across_encoded_words_reads_whole(desk: Desk):
    """Outlook cuts a long encoded name anywhere, even inside a UTF-8 character («ё» below):
    adjacent encoded words are one text (RFC 2047), so the customer is greeted and shown to
    staff by the whole name. Our own names go out cut after a space, so that even a reader
    that puts a space between encoded words (Python's email package) shows whole words."""
    staff = desk.add_staff("sidorov", years=6)
    name = "Петров Пётр Петрович".encode()
    cut = name.index("ё".encode()) + 1
    desk.write("petrov@zavod.example", "Вопрос", "Как настроить отчёт?",
               from_header=f"{_b(name[:cut])}\n {_b(name[cut:])} <petrov@zavod.example>")
    desk.run()
    mail = desk.inbox()
    assert "Здравствуйте, Петров Пётр Петрович!" in body(mail["petrov@zavod.example"][0])
    assert "От:            Петров Пётр Петрович <petrov@zavod.example>" in body(mail[staff][0])
    shown = " ".join(str(mail[staff][0].parsed()["From"]).split())
    assert shown.startswith("Техническая поддержка <")


def test_the_assignee_is_told_when_a_colleague_closes_their_request(desk: Desk):
    """A colleague replies «#закрыть» alone to the assignee's request: the customer gets the
    closing notice, and the assignee learns who closed it (else they go on working on it)."""
    staff, notice = opened(desk)
    colleague = desk.add_staff("petrov", years=6)
    desk.reply(notice, colleague, "#закрыть")
    desk.run()
    mail = desk.inbox()
    assert desk.request().status == "closed"
    assert "закрыт" in body(mail[CUSTOMER][0])
    (told,) = mail[staff]
    assert "Petrov Сотрудник закрыл(а) ваш запрос" in told.parsed()["Subject"]
    assert "Команды: #закрыть" in body(told)
    assert "Клиенту отправлено уведомление о закрытии запроса." in body(told)
    assert colleague not in mail


def test_the_assignee_is_told_when_a_colleague_changes_their_request(desk: Desk):
    """«#уровень ОП1» from a colleague: nothing goes to the customer, the assignee is told."""
    staff, notice = opened(desk)
    colleague = desk.add_staff("petrov", years=6)
    desk.reply(notice, colleague, "#уровень ОП1")
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail
    (told,) = mail[staff]
    assert "Petrov Сотрудник изменил(а) ваш запрос" in told.parsed()["Subject"]
    assert "Команды: #уровень ОП1" in body(told)


def test_a_name_in_latin_letters_signed_from_the_company_domain_identifies_the_sender(desk: Desk):
    """A foreign engineer of ООО «Завод» writes in English from its mail domain, no display name,
    signed «Best regards, John Smith»: the domain names the organisation and the signature the
    person (regulation §2–4: organisation and ФИО), so the request opens at once."""
    staff = desk.add_staff("sidorov", years=6)
    desk.write("j.smith@zavod.example", "Trends are empty",
               "Trends are empty since this morning.\n\nBest regards,\nJohn Smith")
    desk.run()
    request = desk.request()
    assert (request.status, request.requester_name) == ("open", "John Smith")
    assert "Организация:   ООО «Завод»" in body(desk.inbox()[staff][0])


def test_a_sender_from_the_company_domain_is_asked_only_for_the_name(desk: Desk):
    """No name anywhere (operator@zavod.example, no signature): the domain already names the
    organisation, so the customer is asked for the ФИО alone, staff see the organisation, and
    a name given in the answer, in any script, completes the intake."""
    desk.add_staff("sidorov", years=6)
    desk.write("operator@zavod.example", "Вопрос", "Как настроить отчёт по авариям?")
    desk.run()
    mail = desk.inbox()
    question = body(mail["operator@zavod.example"][0])
    assert "фамилию, имя и отчество" in question and "организации" not in question
    assert "Организация:   ООО «Завод»" in body(mail["tp1@tecon.example"][0])
    assert "у клиента запрошены ФИО" in body(mail["tp1@tecon.example"][0])
    desk.reply(mail["operator@zavod.example"][0], "operator@zavod.example", "Ivan Petrov")
    desk.run()
    request = desk.request()
    assert (request.status, request.requester_name) == ("open", "Ivan Petrov")
    assert "Номер запроса: ТП-2026-000001" in body(desk.mail_to("operator@zavod.example"))


def test_a_company_without_a_support_period_is_told_at_once_not_asked_for_a_name(desk: Desk):
    """The domain names АО «Старый клиент», whose support period ended: the answer does not
    depend on the person's name, so the refusal comes at once instead of a contact question."""
    desk.write("operator@old.example", "Вопрос", "Как настроить отчёт?")
    desk.run()
    assert desk.request().status == "rejected"
    assert "не найден действующий" in body(desk.mail_to("operator@old.example"))


CYRILLIC = re.compile("[\u0400-\u04ff]")


def english(text: str, number: str = "ТП-2026-000001") -> bool:
    """Readable by a customer who reads no Russian: no Cyrillic but the request number."""
    return not CYRILLIC.search(text.replace(number, ""))


def test_a_customer_who_writes_in_english_is_acknowledged_in_english(desk: Desk):
    """A customer writes in English: the acknowledgement they get must be readable to them,
    with the regulation's content (the request number, the level, the reaction norm); staff
    still read Russian, and are told the customer's language."""
    staff = desk.add_staff("sidorov", years=6)
    desk.write(CUSTOMER, "Server crashes", "The polling server crashes every night since the update.")
    desk.run()
    mail = desk.inbox()
    (ack,) = mail[CUSTOMER]
    text = body(ack)
    assert english(text) and english(ack.parsed()["Subject"]) and english(str(ack.parsed()["From"]))
    assert "Hello, Ivanov Ivan Ivanovich!" in text
    assert "Request number: ТП-2026-000001" in text
    assert "Level of assistance: OP3 — third-level assistance." in text
    assert "Reaction time: 2 hours (by 25.11.2026 12:00 Moscow time)." in text
    assert '<html lang="en">' in ack.parsed().get_body(("html",)).get_content()
    notice = body(mail[staff][0])
    assert "Язык клиента:  английский" in notice and "Уровень:       ОП3" in notice


def test_questions_to_a_customer_who_writes_in_english_are_in_english(desk: Desk):
    """The contact question, the staff member's answer around its text, the solution's request
    for confirmation, the closing notice: every text of ours an English-writing customer gets."""
    staff = desk.add_staff("sidorov", years=6)
    desk.write("operator@zavod.example", "Question", "How do I set up the alarm report?")
    desk.run()
    (question,) = desk.inbox()["operator@zavod.example"]
    assert english(body(question)) and "full name" in body(question)
    desk.reply(question, "operator@zavod.example", "John Smith")
    desk.run()
    notice = desk.inbox()[staff][0]
    desk.reply(notice, staff, "#решено\nOpen Settings > Reports > Alarms.")
    desk.run()
    solution = desk.mail_to("operator@zavod.example")
    assert english(body(solution)) and "confirm that the problem is solved" in body(solution)
    assert "Sidorov" in str(solution.parsed()["From"]) and english(str(solution.parsed()["From"]))
    desk.reply(solution, "operator@zavod.example", "Solved, thank you!")
    desk.run()
    assert desk.request().status == "closed"
    closing = desk.mail_to("operator@zavod.example")
    assert english(body(closing)) and "Thank you for your confirmation" in body(closing)


@pytest.mark.parametrize("reply, status", [
    ("All good now, the problem is gone. You can close the ticket.", "closed"),
    ("Works perfectly after the restart, thank you!", "closed"),
    ("We did what you wrote, same error in the log.", "open"),
    ("Thx, we'll check tomorrow and let you know.", "resolved"),
    ("I think it works now.", "resolved"),
])
def test_an_english_customer_s_answer_to_a_solution_is_read_as_written(desk: Desk, reply, status):
    """Regulation §2-4 for a customer who writes in English: a confirmation closes the request,
    "the same error" brings it back to work, thanks or a hedged "I think it works" leave it
    waiting for the assignee."""
    staff = desk.add_staff("sidorov", years=6)
    desk.load_crm()
    desk.write(CUSTOMER, "Server crashes", "The polling server crashes every night since the update.")
    desk.run()
    desk.reply(desk.inbox()[staff][0], staff, "#решено\nReinstall the driver and restart the server.")
    desk.run()
    desk.reply(desk.mail_to(CUSTOMER), CUSTOMER, reply)
    desk.run()
    assert desk.request().status == status


def test_a_customer_who_writes_in_russian_still_gets_russian(desk: Desk):
    """One English word («SCADA», a log line) does not make a Russian mail English."""
    desk.add_staff("sidorov", years=6)
    desk.write(CUSTOMER, "Сбой SCADA", "Сервер опроса падает: Exception in thread main")
    desk.run()
    assert "Номер запроса: ТП-2026-000001" in body(desk.mail_to(CUSTOMER))


def test_a_huge_subject_is_cut_to_a_title_in_the_request_and_our_mail(desk: Desk):
    """A 9,600-character subject (a pasted log, a runaway script): the request's subject,
    and every subject line and card that repeat it, stay a title; the mail keeps it whole."""
    desk.add_staff("sidorov", years=6)
    desk.write(CUSTOMER, "", "Опрос встал.", written={"Subject": "\n ".join(["Сбой опроса"] * 800)})
    desk.run()
    subject = desk.request().subject
    assert len(subject) <= 200 and subject.startswith("Сбой опроса Сбой") and subject.endswith(" Сбой…")
    mail = desk.inbox()
    assert all(len(m[0].parsed()["Subject"]) < 300 for m in mail.values())
    with desk.sessions() as session:
        assert len(session.scalars(select(Message.subject).where(Message.direction == "in")).one()) > 9000


def test_a_reply_from_a_colleague_at_the_company_domain_is_shown_as_the_customers_colleague(desk: Desk):
    """Another engineer of ООО «Завод» (zavod.example, not in the CRM) answers our solution
    «не помогло». He may not reopen the request (only the requester and registered contacts
    may), but the assignee must not read him as a stranger: the notice says the address is
    at the organisation's mail domain and which commands settle it."""
    staff, notice = opened(desk)
    desk.reply(notice, staff, "#решено\nПереустановите драйвер.")
    desk.run()
    solution = desk.mail_to(CUSTOMER)
    desk.reply(solution, "sidorova@zavod.example", "Не помогло, ошибка та же.")
    desk.run()
    assert desk.request().status == "resolved"
    text = body(desk.mail_to(staff))
    assert "Адрес на почтовом домене организации (zavod.example): вероятно, это коллега клиента" in text
    assert "Не помогло, ошибка та же." in text
