"""Day one with real mail programs: staff answering from Outlook, Thunderbird, web mail and phones,
customers writing from Outlook (winmail.dat, forwards, answers on top of the quote).

Whole scenarios through real Dovecot, PostgreSQL and the SMTP sink (tests/mailflow.py), the mail
built as each client writes it: its quote header, its HTML, its signature and tag lines.
"""
from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.register.models import AttachmentRow

from tests.mailflow import CRM, Desk, body, mx_trace, staff_answer
from tests.test_scenarios_day_one import CUSTOMER

STAFF_NAME = "Сидоров Сидор Сидорович"

SIGNATURE = ("С уважением,", "Сидоров Сидор Сидорович", "Ведущий инженер ТП1",
             "ООО «Текон-Автоматика»", "Тел.: +7 (495) 730-41-12, доб. 215")
OUTLOOK_HEADERS = {"ru": ("От", "Отправлено", "Кому", "Тема"), "en": ("From", "Sent", "To", "Subject")}
OUTLOOK_DATES = {"ru": "25 ноября 2026 г. 10:05", "en": "Wednesday, November 25, 2026 10:05 AM"}


def outlook_mail(sender: str, parent, text: list[str], signature: tuple[str, ...] = (),
                 language: str = "ru", html_only: bool = False) -> EmailMessage:
    """A reply as Outlook writes it: the text, the writer's signature, then the whole mail answered
    under a «From/Sent/To/Subject» block (no '>' marks); plain and HTML (paragraphs
    ``MsoNormal``), or HTML alone."""
    parsed = parent.parsed()
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, parsed["Reply-To"] or parsed["From"]
    msg["Subject"] = f"RE: {parsed['Subject']}"
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg["In-Reply-To"] = msg["References"] = parsed["Message-ID"]
    labels = OUTLOOK_HEADERS[language]
    values = (str(parsed["From"]), OUTLOOK_DATES[language], sender, str(parsed["Subject"]))
    header = [f"{label}: {value}" for label, value in zip(labels, values)]
    quoted = body(parent).splitlines()
    plain = "\n\n".join(text) + "\n\n" + "\n".join(signature) + "\n\n" + "\n".join(header) + "\n\n" + "\n".join(quoted)
    paragraphs = "".join(f"<p class=MsoNormal>{html.escape(line)}<o:p></o:p></p>" for line in text)
    paragraphs += "<p class=MsoNormal><o:p>&nbsp;</o:p></p>" + "".join(
        f"<p class=MsoNormal><span style='color:#1F497D'>{html.escape(line)}</span><o:p></o:p></p>"
        for line in signature)
    paragraphs += ("<div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>"
                   "<p class=MsoNormal>" + "<br>".join(
                       f"<b>{label}:</b> {html.escape(value)}" for label, value in zip(labels, values))
                   + "<o:p></o:p></p></div>")
    paragraphs += "".join(f"<p class=MsoNormal>{html.escape(line)}<o:p></o:p></p>" for line in quoted)
    document = (f"<html><head><style>p.MsoNormal {{margin:0cm}}</style></head><body lang=RU>"
                f"<div class=WordSection1>{paragraphs}</div></body></html>")
    if html_only:
        msg.set_content(document, subtype="html")
    else:
        msg.set_content(plain)
        msg.add_alternative(document, subtype="html")
    return msg


def opened(desk: Desk) -> tuple[str, object]:
    """A customer's request and the notification of it to Sidorov, its assignee."""
    staff = desk.add_staff("sidorov", full_name=STAFF_NAME)
    desk.write(CUSTOMER, "Не запускается АРМ", "После обновления АРМ не запускается.")
    desk.run()
    return staff, desk.inbox()[staff][0]


def deliver(desk: Desk, sender: str, msg: EmailMessage) -> None:
    desk.dovecot.append(desk.mailbox.user, mx_trace(sender, "pass") + msg.as_bytes())


@pytest.mark.parametrize("language", ["ru", "en"])
@pytest.mark.parametrize("html_only", [False, True], ids=["plain-and-html", "html-only"])
def test_a_staff_answer_from_outlook_reaches_the_customer_once_without_the_notification(
        desk: Desk, language: str, html_only: bool):
    """Sidorov answers from Outlook (Russian or English): his text on top, his own signature
    (phone, title), the notification quoted whole below «От:/From: … Отправлено:/Sent: …».
    The customer gets the answer once, none of the notification (contract, level reason,
    commands), and one signature: the bot's (his name, the support address, the number)."""
    staff, notice = opened(desk)
    deliver(desk, staff, outlook_mail(staff, notice, ["Иван Иванович, добрый день!",
                                                      "Переустановите драйвер ключа."],
                                      SIGNATURE, language, html_only))
    desk.run()
    answer = body(desk.mail_to(CUSTOMER))
    assert answer.count("Переустановите драйвер ключа.") == 1
    for internal in ("Договор", "ТП-17", "Исполнитель", "Уровень", "#решено", "Текст обращения",
                     "После обновления АРМ не запускается", "Отправлено", "Sent:"):
        assert internal not in answer
    assert "доб. 215" not in answer and "С уважением" not in answer and "Ведущий инженер" not in answer
    assert answer.count(STAFF_NAME) == 1 and answer.count("\n--\n") == 1
    assert answer.index("Переустановите драйвер ключа.") < answer.index(STAFF_NAME)


def phone_answer(desk: Desk, notice, sender: str, text: str) -> None:
    """A reply from a phone: the text, then the client's tag line, then the quote."""
    parent = notice.parsed()
    quoted = "\n".join(f"> {line}" for line in body(notice).splitlines())
    deliver(desk, sender, staff_answer(
        notice, sender, f"{text}\n\n25.11.2026, 10:05, Техническая поддержка <{parent['Reply-To']}>:\n{quoted}\n",
        subject=f"Re: {parent['Subject']}"))


@pytest.mark.parametrize("tag", ["Отправлено с iPhone", "Sent from my Galaxy",
                                 "Отправлено из Mail.ru для Android", "Отправлено из мобильной Яндекс Почты",
                                 "Get Outlook for Android", "Sent from Yahoo Mail on Android"])
def test_a_phone_clients_tag_line_does_not_reach_the_customer(desk: Desk, tag: str):
    """«Отправлено с iPhone» and the like are the phone's advertisement, not the answer."""
    staff, notice = opened(desk)
    phone_answer(desk, notice, staff, f"Переустановите драйвер ключа.\n\n{tag}")
    desk.run()
    answer = body(desk.mail_to(CUSTOMER))
    assert "Переустановите драйвер ключа." in answer and tag not in answer


def web_mail_answer(desk: Desk, notice, sender: str, attribution: str, text: str) -> None:
    """A reply from web mail (Mail.ru, Yandex, Thunderbird's HTML): HTML only, the quote a
    <blockquote> below the client's attribution line."""
    quoted = "<br>".join(html.escape(line) for line in body(notice).splitlines())
    deliver(desk, sender, staff_answer(
        notice, sender, f"<html><body><div>{html.escape(text)}</div><div>&nbsp;</div>"
        f"<div>{html.escape(attribution)}</div><blockquote>{quoted}</blockquote></body></html>",
        subject=f"Re: {notice.parsed()['Subject']}", subtype="html"))


@pytest.mark.parametrize("attribution", [
    "Среда, 25 ноября 2026, 10:05 +03:00 от Техническая поддержка <support@tecon.example>:",  # Mail.ru
    "25.11.2026, 10:05, \"Техническая поддержка\" <support@tecon.example>:",  # Yandex
    "25.11.2026 10:05, Техническая поддержка пишет:",  # Thunderbird
    "On 25.11.2026 10:05, Техническая поддержка wrote:",  # Thunderbird, English
])
def test_a_staff_answer_from_web_mail_reaches_the_customer_without_the_quote(desk: Desk, attribution: str):
    staff, notice = opened(desk)
    web_mail_answer(desk, notice, staff, attribution, "Переустановите драйвер ключа.")
    desk.run()
    answer = body(desk.mail_to(CUSTOMER))
    assert "Переустановите драйвер ключа." in answer
    assert "Договор" not in answer and "10:05" not in answer and "поддержка <" not in answer


def doubted(desk: Desk) -> tuple[str, object]:
    """A request from an address the CRM does not know, naming ООО «Завод» and a ФИО: the card
    says «КЛИЕНТ НЕ ПОДТВЕРЖДЁН» with the organisation's CRM phone."""
    staff = desk.add_staff("sidorov", full_name=STAFF_NAME)
    desk.load_crm(CRM_WITH_PHONE)
    desk.write("ivanov.ii@mail.example", "Не запускается АРМ",
               "После обновления АРМ не запускается.\n\nС уважением,\nИванов Иван Иванович\nООО «Завод»")
    desk.run()
    notice = desk.inbox()[staff][0]
    assert "КЛИЕНТ НЕ ПОДТВЕРЖДЁН" in body(notice) and "+7 495 111-22-33" in body(notice)
    return staff, notice


CRM_WITH_PHONE = CRM.replace("ivanov@zavod.example;;ТП-17", "ivanov@zavod.example;+7 495 111-22-33;ТП-17")


def test_a_notification_quoted_below_an_unknown_quote_header_never_reaches_the_customer(desk: Desk):
    """Accident: a mail program whose quote header the bot does not know («"Техническая
    поддержка" <…> 25.11.2026 10:05», no '>' marks) leaves the whole notification below the
    answer: the card (contract, CRM phone, «КЛИЕНТ НЕ ПОДТВЕРЖДЁН»). Nothing goes to the
    customer; the staff member is told which internal lines the answer carries."""
    staff, notice = doubted(desk)
    desk.new_mail()
    card = body(notice).replace("Запрос:  ", "Запрос: ")  # the quote header block is not the card's first line
    deliver(desk, staff, staff_answer(notice, staff, "Переустановите драйвер ключа.\n\n"
                                    f"\"Техническая поддержка\" <support@tecon.example> 25.11.2026 10:05\n\n{card}"))
    desk.run()
    mail = desk.inbox()
    assert "ivanov.ii@mail.example" not in mail
    (told,) = mail[staff]
    assert "Ответ клиенту не отправлен" in told.parsed()["Subject"]
    assert "служебный текст" in body(told) and "Клиенту ничего не отправлено." in body(told)


@pytest.mark.parametrize("internal", ["Договор:", "КЛИЕНТ НЕ ПОДТВЕРЖДЁН", "телефон по CRM"])
def test_a_card_line_pasted_into_an_answer_never_reaches_the_customer(desk: Desk, internal: str):
    """Accident: one line of the card (the contract, the identity doubt, the CRM phone) pasted
    into an answer, its spacing changed as an HTML quote changes it."""
    staff, notice = doubted(desk)
    desk.new_mail()
    line = next(line for line in body(notice).splitlines() if internal in line)
    deliver(desk, staff, staff_answer(notice, staff, f"Добрый день!\n{' '.join(line.split())}\nПерезвоните нам."))
    desk.run()
    mail = desk.inbox()
    assert "ivanov.ii@mail.example" not in mail
    assert "Ответ клиенту не отправлен" in mail[staff][0].parsed()["Subject"]


def test_the_customers_own_words_quoted_back_still_reach_them(desk: Desk):
    """The notification quotes the customer's text; quoting it back in an answer is no leak."""
    staff, notice = opened(desk)
    deliver(desk, staff, staff_answer(notice, staff, "Вы пишете: «После обновления АРМ не запускается.»\n"
                                                   "Переустановите драйвер ключа."))
    desk.run()
    assert "После обновления АРМ не запускается." in body(desk.mail_to(CUSTOMER))


def test_a_notification_attached_to_an_answer_never_reaches_the_customer(desk: Desk):
    """Accident: Outlook's «attach the original message» (or a notification forwarded as an
    attachment) with an answer: the whole card would go to the customer as an .eml file."""
    staff, notice = opened(desk)
    msg = staff_answer(notice, staff, "Переустановите драйвер ключа.")
    msg.add_attachment(notice.parsed())
    deliver(desk, staff, msg)
    desk.run()
    mail = desk.inbox()
    assert CUSTOMER not in mail
    assert "приложено письмо" in body(mail[staff][0])


def test_a_staff_reply_to_all_reaches_the_customer_without_the_notification(desk: Desk):
    """Reply-all to the notification: To the support address, Cc the staff group; the answer goes
    to the customer, the quoted notification does not."""
    staff, notice = opened(desk)
    msg = staff_answer(notice, staff, "Переустановите драйвер ключа.\n\n"
                       "25.11.2026 10:05, Техническая поддержка пишет:\n"
                       + "\n".join(f"> {line}" for line in body(notice).splitlines()))
    msg["Cc"] = "tp1@tecon.example"
    deliver(desk, staff, msg)
    desk.run()
    answer = body(desk.mail_to(CUSTOMER))
    assert "Переустановите драйвер ключа." in answer and "Договор" not in answer


TNEF = Path(__file__).parent / "data" / "tnef"  # real Outlook/Exchange streams (SOURCES.md there)


def outlook_with_winmail(sender: str, subject: str, text: str | None, winmail: bytes) -> EmailMessage:
    """A customer's mail from Outlook in «Rich Text» mode: the text (or none: Exchange sends the
    whole mail as application/ms-tnef) and winmail.dat, which holds the files."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@tecon.example", subject
    msg["Message-ID"] = make_msgid(domain="zavod.example")
    if text is None:
        msg.set_content(winmail, maintype="application", subtype="ms-tnef")
    else:
        msg.set_content(text)
        msg.add_attachment(winmail, maintype="application", subtype="ms-tnef", filename="winmail.dat")
    return msg


def test_files_inside_winmail_dat_reach_the_request_under_their_names(desk: Desk):
    """Outlook packs the files into winmail.dat: staff see each file by its own name (umlauts
    kept) on the request and in the notification, not one «winmail.dat» nobody can open."""
    staff = desk.add_staff("sidorov", full_name=STAFF_NAME)
    deliver(desk, CUSTOMER, outlook_with_winmail(CUSTOMER, "Логи сервера опроса", "Логи во вложении.",
                                                 (TNEF / "umlaut.tnef").read_bytes()))
    desk.run()
    with desk.sessions() as session:
        names = session.scalars(select(AttachmentRow.original_filename).order_by(AttachmentRow.id)).all()
    assert names == ["TBZ PARIV GmbH.jpg", "image003.jpg", "UmlautAnhang-äüö.txt"]
    notice = body(desk.inbox()[staff][0])
    assert "Логи во вложении." in notice and "winmail.dat" not in notice
    assert "UmlautAnhang-" in notice and "TBZ PARIV GmbH.jpg" in notice


@pytest.mark.parametrize("sample, words", [
    ("long-filename.tnef", "I've attached a temp. license for QARun 4.7."),  # RTF body
    ("body.tnef", "Amendments 1-10 of the Constitution"),  # HTML body
])
def test_a_mail_whose_text_is_only_inside_winmail_dat_is_read(desk: Desk, sample: str, words: str):
    """Exchange sends the whole mail as winmail.dat (no text part): its text (RTF or HTML) is
    the request's text, shown to staff, and its files are the request's files."""
    staff = desk.add_staff("sidorov", full_name=STAFF_NAME)
    deliver(desk, CUSTOMER, outlook_with_winmail(CUSTOMER, "License", None, (TNEF / sample).read_bytes()))
    desk.run()
    notice = body(desk.inbox()[staff][0])
    assert words in notice
    assert "{\\rtf" not in notice and "<html" not in notice.lower()
