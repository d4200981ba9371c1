"""Backup and restore of the register (docs/operations.md, "Backup and restore"): a real
``pg_dump -Fc`` of a populated database, ``pg_restore`` into an empty one, and mailbot going on
with the restored register as if nothing happened."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select

from mailbot.cli.main import main
from mailbot.register import db
from mailbot.register.models import AttachmentRow, Event, Message, Outbox, Request, StoredFile
from tests.mailflow import Desk
from tests.servers import drop_database, fresh_database, libpq_url

CUSTOMER = "ivanov@zavod.example"


def client_tool(name: str, database_url: str) -> str:
    """``pg_dump``/``pg_restore`` at least as new as the server (the machine's, or the one the
    embedded PostgreSQL package ships); skip when there is none."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        server_major = conn.info.server_version // 10000
    for find in (shutil.which, _embedded):  # the embedded package only when needed
        tool = find(name)
        if tool is None:
            continue
        version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
        found = re.search(r"(\d+)(?:\.\d+)?", version)
        if found and int(found.group(1)) >= server_major:
            return tool
    pytest.skip(f"no {name} for PostgreSQL {server_major} on this machine")


def _embedded(name: str) -> str | None:
    """The tool of the embedded PostgreSQL package (imported only when the machine's is too old)."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return str(Path(POSTGRES_BIN_PATH) / name)


def counts(sessions) -> dict[str, int]:
    with sessions() as session:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (Request, Message, AttachmentRow, StoredFile, Event, Outbox)}


def test_a_restored_register_works_as_the_original(desk: Desk, pg_base_url, tmp_path, capsys,
                                                   monkeypatch):
    desk.load_crm()
    desk.write(CUSTOMER, "Не запускается АРМ", "Ошибка при запуске, лог во вложении.",
               attachments=(("server.log", b"ERROR 42\n"),))
    desk.run()
    ack = desk.mail_to(CUSTOMER)
    number = desk.request().number
    before = counts(desk.sessions)

    dump = tmp_path / "mailbot.dump"
    subprocess.run([client_tool("pg_dump", desk.config.database.url), "-Fc", "-f", str(dump),
                    libpq_url(desk.config.database.url)], check=True, capture_output=True)
    restored = fresh_database(pg_base_url)
    try:
        subprocess.run([client_tool("pg_restore", restored), "--no-owner", "--exit-on-error",
                        "-d", libpq_url(restored), str(dump)], check=True, capture_output=True)
        engine = db.make_engine(restored)
        assert db.current_version(engine) == db.latest_version()
        assert counts(db.make_sessionmaker(engine)) == before

        monkeypatch.setenv("MAILBOT_DATABASE_URL", restored)
        monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
        assert main(["requests", "show", number]) == 0
        assert number in capsys.readouterr().out
        assert main(["db", "upgrade"]) == 0  # nothing to apply: the schema came back whole

        # the bot goes on with the restored register: the customer's reply joins the request,
        # a new mail gets the next number
        on_restored = Desk(restored, desk.dovecot, desk.mailbox, desk.sink)
        on_restored.seen = len(desk.sink.messages)
        on_restored.write(CUSTOMER, f"Re: {ack.parsed()['Subject']}", "Дополняю: ошибка 42.",
                          reply_to=ack)
        on_restored.write(CUSTOMER, "Вопрос по настройке", "Как настроить привязку ключа?")
        on_restored.run()
        with on_restored.sessions() as session:
            numbers = session.scalars(select(Request.number).order_by(Request.id)).all()
        assert len(numbers) == 2 and numbers[0] == number
        assert int(numbers[1][-6:]) == int(number[-6:]) + 1
        engine.dispose()
        on_restored.sessions.kw["bind"].dispose()
    finally:
        drop_database(restored)
