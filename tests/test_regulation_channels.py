"""Regulation §1: requests by phone, web site and intranet portal follow the same life cycle.

Also: everything a staff command does by mail is available from the CLI.
"""
from __future__ import annotations

import pytest

from mailbot.cli.main import EX_USAGE, main
from mailbot.clock import Clock
from tests.mailflow import Desk, body

CUSTOMER = "ivanov@zavod.example"


@pytest.fixture
def desk(desk: Desk, database_url, mailbox, smtp_sink, monkeypatch) -> Desk:
    """The shared desk, on the real clock (as the CLI), with the CLI pointed at it."""
    desk.clock = Clock()
    for key, value in {"DATABASE_URL": database_url, "IMAP_HOST": mailbox.host,
                       "IMAP_PORT": str(mailbox.port), "IMAP_SSL": "false",
                       "IMAP_USERNAME": mailbox.user, "IMAP_PASSWORD": mailbox.password,
                       "SMTP_HOST": smtp_sink.host, "SMTP_PORT": str(smtp_sink.port),
                       "SUPPORT_ADDRESS": mailbox.user,
                       "SUPPORT_TP1_ADDRESS": "tp1@tecon.example"}.items():
        monkeypatch.setenv(f"MAILBOT_{key}", value)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    return desk


def test_phone_request_is_registered_and_acknowledged_by_mail(desk, capsys):
    """§1: a request taken on the hot line: contract checked, level set, customer acknowledged."""
    assert main(["staff", "add", "sidorov", "--name", "Сидоров С. С.", "--email",
                 "sidorov@tecon.example", "--tier", "tp1", "--department",
                 "Отдел сопровождения проектов", "--years", "4"]) == 0
    assert main(["requests", "new", "--channel", "phone", "--org", "ORG-1",
                 "--contact", "Иванов Иван Иванович", "--email", CUSTOMER,
                 "--text", "Просит помочь с перепривязкой ключа"]) == 0
    assert "ТП-2026-000001 registered: open, level ОП1" in capsys.readouterr().out
    request = desk.request()
    assert (request.channel, request.organization_id is not None) == ("phone", True)
    desk.run()  # the daemon sends what the CLI queued
    mail = desk.inbox()
    assert "ТП-2026-000001" in body(mail[CUSTOMER][0])
    assert "перепривязкой" in body(mail["sidorov@tecon.example"][0])


def test_portal_request_of_an_expired_contract_is_rejected(desk, capsys):
    assert main(["requests", "new", "--channel", "portal", "--org", "Старый клиент",
                 "--contact", "Петров Пётр Петрович", "--text", "Сбой сервера"]) == 0
    assert "rejected" in capsys.readouterr().out


def test_web_request_without_known_organisation_is_refused_with_a_reason(desk, capsys):
    assert main(["requests", "new", "--channel", "web", "--org", "Нет такой",
                 "--text", "Вопрос"]) == EX_USAGE
    assert "no organisation" in capsys.readouterr().err


def test_staff_commands_from_the_cli(desk, capsys):
    desk.add_staff("kuznetsov", years=7)
    desk.add_incident("INC-000045", "АРМ не запускается", "Сбой запуска", "Переустановите драйвер.")
    desk.write(CUSTOMER, "Вопрос", "Как выполнить привязку?")
    desk.run()
    desk.new_mail()
    number = desk.request().number

    assert main(["requests", "command", number, "--as", "kuznetsov", "#уровень ОП3"]) == 0
    assert desk.request().level == 3
    assert main(["requests", "command", number, "--as", "kuznetsov", "#уровнь"]) == EX_USAGE
    assert "nothing done" in capsys.readouterr().err
    assert main(["requests", "command", number, "--as", "kuznetsov",
                 "#инцидент INC-000045"]) == 0
    desk.run()
    assert "[INC-000045]" in desk.mail_to(CUSTOMER).parsed()["Subject"]
    assert desk.request().status == "resolved"


def test_incidents_and_staff_lists(desk, capsys):
    assert main(["incidents", "add", "--title", "Не печатаются отчёты",
                 "--symptoms", "Ошибка печати отчётов", "--solution", "Обновите драйвер принтера"]) == 0
    assert "[INC-000001] created" in capsys.readouterr().out
    assert main(["incidents", "search", "ошибка при печати отчёта"]) == 0
    assert "INC-000001" in capsys.readouterr().out
    assert main(["staff", "add", "ivanova", "--name", "Иванова", "--email", "ivanova@tecon.example",
                 "--tier", "tp2", "--years", "8"]) == 0
    assert main(["staff", "list"]) == 0
    assert "ivanova" in capsys.readouterr().out


def test_large_customer_files_are_listed_in_the_notification_and_kept(desk, capsys, tmp_path):
    """Files too big to travel with the staff notification stay with the request, one command away."""
    from mailbot.config import with_overrides

    desk.config = with_overrides(desk.config, limits={"notify_attachment_bytes": 1000})
    staff = desk.add_staff("sidorov", years=4)
    desk.write(CUSTOMER, "Логи", "Пришлите патч, логи во вложении.",
               attachments=(("small.log", b"s" * 500), ("big.zip", b"B" * 5000)))
    desk.run()
    notice = desk.inbox()[staff][0]
    assert [a.get_filename() for a in notice.parsed().iter_attachments()] == ["small.log"]
    assert "big.zip" in body(notice) and "mailbot requests files" in body(notice)

    assert main(["requests", "files", desk.request().number, "--save", str(tmp_path)]) == 0
    assert "2 file(s)" in capsys.readouterr().out
    assert sorted(p.name.split("-", 1)[1] for p in tmp_path.iterdir()) == ["big.zip", "small.log"]
    assert next(tmp_path.glob("*-big.zip")).read_bytes() == b"B" * 5000
