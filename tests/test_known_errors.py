"""The known-error database (regulation §4–5): search in Russian, the CLI, imports, history.

The search is tested as staff use it: texts that are about an incident find it (other word
forms, typos, error codes, a customer's long mail), texts that are not find nothing, even when
they share a common word with it.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select, text

from mailbot.cli.main import EX_USAGE, main
from mailbot.kb import incidents as kb
from mailbot.kb.search import is_code, search
from mailbot.register import db
from mailbot.register.models import Incident, IncidentHistory, IncidentTerm
from tests.servers import libpq_url

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)
KNOWN = [  # number, title, symptoms, solution
    ("INC-000001", "АРМ диспетчера не запускается после обновления драйверов",
     "При запуске АРМ появляется окно ошибки и программа закрывается",
     "Переустановите драйвер ключа версии 3.2"),
    ("INC-000002", "Не печатаются отчёты", "При печати суточного отчёта ошибка принтера",
     "Обновите драйвер принтера"),
    ("INC-000003", "Ошибка 0x80070005 при запуске службы опроса",
     "Служба опроса не стартует, в журнале отказ в доступе",
     "Запустите службу от имени администратора"),
    ("INC-000004", "ORA-12541: нет прослушивателя при подключении к серверу БД",
     "Сервер приложений не подключается к базе Oracle", "Запустите listener: lsnrctl start"),
    ("INC-000005", "Перепривязка лицензионного ключа не выполняется",
     "Мастер перепривязки завершается ошибкой", "Удалите старую привязку в менеджере лицензий"),
    ("INC-000006", "Зависание сервера опроса при большом числе контроллеров",
     "Сервер опроса перестаёт отвечать при 500 контроллерах", "Увеличьте пул потоков"),
    ("INC-000007", "Неверное время в архиве после перехода на зимнее время",
     "Метки времени в архиве сдвинуты на час", "Установите обновление часовых поясов"),
    ("INC-000008", "Ошибка подключения к серверу БД", "Не удаётся подключиться к базе данных",
     "Проверьте сетевое соединение и учётные данные"),
]
MAIL = ("Сбой АРМ\nДобрый день! После установки обновления драйверов у нас перестал запускаться "
        "АРМ диспетчера: выдаёт ошибку и закрывается. Просим срочно помочь.\n\n"
        "С уважением,\nИванов Иван Иванович\nинженер, ООО «Завод»")


@pytest.fixture
def sessions(database_url):
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    sessions = db.make_sessionmaker(engine)
    with sessions.begin() as session:
        for number, title, symptoms, solution in KNOWN:
            kb.create(session, number=number, title=title, symptoms=symptoms, solution=solution,
                      actor="test", now=NOW)
    return sessions


def found(sessions, query: str, limit: int = 3) -> list[str]:
    with sessions() as session:
        return [m.number for m in search(db.dbapi(session), [query], limit)[query]]


@pytest.mark.parametrize("query, number", [
    ("не запускается АРМ диспетчера", "INC-000001"),  # other word order and forms
    ("АРМ не запускаеться после обнавления драйверов", "INC-000001"),  # typos
    ("Сбой АРМ\nАРМ не запускается.", "INC-000001"),  # all words but one
    (MAIL, "INC-000001"),  # a customer's mail: greeting, urgency, signature
    ("отчет не печатается", "INC-000002"),  # ё/е, singular/plural
    ("служба выдаёт 0x80070005", "INC-000003"),  # an error code
    ("Служба опроса не стартует, отказ в доступе", "INC-000003"),  # the symptoms' words
    ("ora-12541", "INC-000004"), ("ORA12541 при старте", "INC-000004"),  # a code written otherwise
    ('"нет прослушивателя"', "INC-000004"),  # a phrase
    ("перепривязка ключа", "INC-000005"),
    ("сервер опроса зависает", "INC-000006"),
    ("время в архиве после перехода на зимнее время сбилось", "INC-000007"),
])
def test_a_text_about_a_known_error_finds_it_first(sessions, query, number):
    assert found(sessions, query)[:1] == [number]


@pytest.mark.parametrize("query", [
    "Ошибка при входе в личный кабинет на сайте",  # shares «ошибка» with several
    "Как настроить отправку отчётов по почте",  # shares «отчёт» with INC-000002
    "Прошу выслать счёт на продление договора технической поддержки",
    "Сервер приложений перезагружается ночью по расписанию",  # shares «сервер»
    "Добрый день! Подскажите, пожалуйста, график работы бухгалтерии в праздники.\n\n"
    "С уважением, Петров",
])
def test_an_unrelated_text_finds_nothing(sessions, query):
    assert found(sessions, query) == []


def test_all_words_of_a_short_query_must_match(sessions):
    assert found(sessions, "драйвер принтера") == ["INC-000002"]
    assert found(sessions, "драйвер -принтера") == ["INC-000001"]  # web-search syntax: exclusion
    assert set(found(sessions, "ошибка", limit=10)) == {"INC-000001", "INC-000002", "INC-000003",
                                                        "INC-000005", "INC-000008"}


def test_the_reason_of_a_match_says_why(sessions):
    with sessions() as session:
        conn = db.dbapi(session)
        code = search(conn, ["служба выдаёт 0x80070005"])["служба выдаёт 0x80070005"][0]
        typo = search(conn, ["драйвра ключа"])["драйвра ключа"][0]
        mail = search(conn, [MAIL])[MAIL][0]
    assert "код ошибки 0x80070005" in code.reason
    assert "все слова запроса" in typo.reason and "драйвр → драйвер" in typo.reason
    assert "слов заголовка" in mail.reason and "арм" in mail.reason


def test_a_duplicate_is_not_found_but_its_original_is(sessions):
    with sessions.begin() as session:
        copy = kb.create(session, title="Не печатаются отчёты на принтере", actor="test", now=NOW)
        kb.set_status(session, copy, "duplicate", duplicate_of=kb.by_number(session, "INC-000002"),
                      actor="test", now=NOW)
    assert found(sessions, "не печатаются отчёты") == ["INC-000002"]


def test_error_codes_are_told_from_versions_and_years():
    assert all(map(is_code, ["0x80070005", "ora12541", "e1234", "1053", "12541"]))
    assert not any(map(is_code, ["3.2.1", "2026", "1999", "x64", "win10", "арм"]))


def test_a_batch_of_texts_is_searched_in_a_fixed_number_of_statements(sessions, database_url):
    statements = []

    class Counting(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            statements.append(query)
            return super().execute(query, params, **kwargs)

    with psycopg.connect(libpq_url(database_url), cursor_factory=Counting) as conn:
        queries = [MAIL, "отчет не печатается", "Сбой АРМ\nАРМ не запускается.", "ora-12541",
                   "Прошу выслать счёт"] * 4
        result = search(conn, queries)
    assert result[MAIL] and result["ora-12541"] and not result["Прошу выслать счёт"]
    assert len(statements) <= 3


def test_the_vocabulary_follows_every_change(sessions):
    """The triggers keep incident_terms and incident_title_words in step with the incidents."""
    def terms(session) -> dict[str, int]:
        return {t.lexeme: t.ndoc for t in session.scalars(select(IncidentTerm))}

    with sessions.begin() as session:
        before = terms(session)
        incident = kb.by_number(session, "INC-000002")
        kb.edit(session, incident, {"title": "Не печатаются накладные"}, actor="test", now=NOW)
        kb.set_status(session, incident, "closed", actor="test", now=NOW)  # text unchanged
    with sessions() as session:
        after = terms(session)
        title_words = set(session.scalars(text(
            "SELECT lexeme FROM incident_title_words WHERE incident_id = :id"), {"id": incident.id}))
    assert after["накладн"] == 1 and after["отчет"] == before["отчет"]  # still in its symptoms
    assert after["печата"] == before["печата"]
    assert after[""] == before[""] == len(KNOWN)
    assert title_words == {"печата", "накладн"}
    assert found(sessions, "не печатаются накладные") == ["INC-000002"]
    with sessions.begin() as session:
        session.delete(kb.by_number(session, "INC-000002"))
    with sessions() as session:
        assert terms(session)[""] == len(KNOWN) - 1 and terms(session)["накладн"] == 0


# ---------------------------------------------------------------- changes and history

def test_every_change_of_an_incident_is_in_its_history(sessions):
    with sessions.begin() as session:
        incident = kb.by_number(session, "[INC-7]")
        kb.edit(session, incident, {"solution": "Обновите tzdata", "version": "3.2"},
                actor="petrova", now=NOW)
        kb.set_status(session, incident, "investigating", actor="petrova", now=NOW)
        kb.set_status(session, incident, "duplicate", actor="petrova", now=NOW,
                      duplicate_of=kb.by_number(session, "INC-000001"))
        with pytest.raises(kb.KbError):
            kb.set_status(session, incident, "duplicate", actor="petrova", now=NOW)
    with sessions() as session:
        rows = session.scalars(select(IncidentHistory).where(
            IncidentHistory.incident_id == incident.id).order_by(IncidentHistory.id)).all()
    assert [(r.kind, r.actor) for r in rows] == [("created", "test"), ("edited", "petrova"),
                                                 ("status", "petrova"), ("status", "petrova")]
    assert rows[1].changes == {"solution": ["Установите обновление часовых поясов", "Обновите tzdata"],
                               "version": ["", "3.2"]}
    assert rows[3].changes == {"status": ["investigating", "duplicate"],
                               "duplicate_of": [None, "INC-000001"]}


def test_new_incidents_are_numbered_after_the_highest(sessions):
    with sessions.begin() as session:
        kb.create(session, number="INC-000045", title="Старый инцидент", actor="test", now=NOW)
        kb.import_rows(session, [kb._Row(1, {"title": "Из файла", "number": "INC-000100"})],
                       actor="test", now=NOW)
        assert kb.create(session, title="Новый", actor="test", now=NOW).number == "INC-000101"


# ---------------------------------------------------------------- import

def test_import_csv_creates_updates_and_reports_bad_rows(sessions, tmp_path: Path):
    export = tmp_path / "kb.csv"
    export.write_text(
        "number;title;symptoms;solution;product;version;status;duplicate_of\n"
        "INC-000002;Не печатаются отчёты;При печати ошибка;Обновите драйвер принтера;;;closed;\n"
        ";Сбой OPC-сервера после обновления;OPC-клиенты теряют связь;Перезапустите OPC-сервер;"
        "АС ТЕКОН;3.4;solved;\n"
        ";Не печатаются суточные отчёты;;;;;дубликат;INC-000002\n"
        ";;без заголовка;;;;;\n"
        "INC-000009;Непонятный статус;;;;;почти;\n", encoding="cp1251")
    with sessions.begin() as session:
        summary = kb.import_file(session, export, actor="cli", now=NOW)
    assert (summary.created, summary.updated) == (2, 1)
    assert [line for line, _ in summary.errors] == [5, 6]
    with sessions() as session:
        updated = kb.by_number(session, "INC-000002")
        assert (updated.status, updated.symptoms) == ("closed", "При печати ошибка")
        opc = session.scalar(select(Incident).where(Incident.title.like("Сбой OPC%")))
        assert (opc.number, opc.status, opc.product, opc.version) == ("INC-000009", "solved",
                                                                    "АС ТЕКОН", "3.4")
        copy = session.scalar(select(Incident).where(Incident.title == "Не печатаются суточные отчёты"))
        assert copy.status == "duplicate" and copy.duplicate_of == updated.id
    assert found(sessions, "OPC-клиенты теряют связь") == ["INC-000009"]


def test_import_json(sessions, tmp_path: Path):
    export = tmp_path / "kb.json"
    export.write_text(json.dumps({"incidents": [
        {"title": "Модем GSM не регистрируется в сети", "symptoms": "Нет связи с объектом",
         "solution": "Замените SIM-карту", "status": "решён"},
        {"number": "INC-000001", "title": KNOWN[0][1], "symptoms": KNOWN[0][2],
         "solution": KNOWN[0][3]},
        "not an object"]}, ensure_ascii=False), encoding="utf-8")
    with sessions.begin() as session:
        summary = kb.import_file(session, export, actor="cli", now=NOW)
    assert (summary.created, summary.updated, summary.unchanged) == (1, 0, 1)
    assert summary.errors == [(3, "no title")]
    assert found(sessions, "модем не регистрируется") == ["INC-000009"]


# ---------------------------------------------------------------- the CLI

@pytest.fixture
def cli(sessions, database_url, monkeypatch):
    monkeypatch.setenv("MAILBOT_DATABASE_URL", database_url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    return sessions


def test_kb_commands(cli, capsys, tmp_path):
    assert main(["staff", "add", "petrova", "--name", "Петрова", "--email", "petrova@tecon.example",
                 "--tier", "tp2"]) == 0
    assert main(["kb", "add", "--title", "Не строятся тренды", "--symptoms", "Пустые графики",
                 "--product", "АС ТЕКОН", "--version", "3.4", "--as", "petrova"]) == 0
    assert "[INC-000009] created" in capsys.readouterr().out
    assert main(["kb", "search", "тренды не строятся"]) == 0
    out = capsys.readouterr().out
    assert "[INC-000009]" in out and "все слова запроса" in out
    assert main(["kb", "edit", "INC-9", "--solution", "Пересоздайте индекс архива",
                 "--status", "решён", "--as", "petrova"]) == 0
    assert main(["kb", "show", "INC-000009"]) == 0
    out = capsys.readouterr().out
    assert "status:     solved" in out and "Пересоздайте индекс архива" in out
    assert "edited" in out and "petrova" in out and "АС ТЕКОН 3.4" in out
    assert main(["kb", "list", "--status", "решён"]) == 0
    assert capsys.readouterr().out.strip().startswith("[INC-000009] solved")
    assert main(["kb", "edit", "INC-000009", "--status", "дубликат"]) == EX_USAGE
    assert "duplicate needs" in capsys.readouterr().err
    assert main(["kb", "show", "INC-000404"]) == EX_USAGE
    assert main(["incidents", "search", "ora-12541"]) == 0  # the old name still works
    assert "[INC-000004]" in capsys.readouterr().out
    export = tmp_path / "kb.csv"
    export.write_text("title;symptoms\nНе открывается журнал событий;Пустое окно\n", encoding="utf-8")
    assert main(["kb", "import", str(export)]) == 0
    assert "1 created" in capsys.readouterr().out


# ---------------------------------------------------------------- migration 0012

def test_db_upgrade_maps_the_old_incident_statuses_and_builds_the_search(database_url):
    from tests.test_schema import _as_version_4, assert_models_mirror

    engine = db.make_engine(database_url)
    _as_version_4(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO incidents (number, title, status) VALUES "
            "('INC-000045', 'АРМ не запускается после обновления драйверов', 'open'), "
            "('INC-000046', 'Не печатаются отчёты', 'in_progress'), "
            "('INC-000047', 'Ошибка ORA-12541', 'closed')")
    db.upgrade_schema(engine)
    assert_models_mirror(engine)
    sessions = db.make_sessionmaker(engine)
    with sessions.begin() as session:
        statuses = dict(session.execute(select(Incident.number, Incident.status)).all())
        assert statuses == {"INC-000045": "new", "INC-000046": "investigating",
                            "INC-000047": "closed"}
        assert kb.create(session, title="Новый", actor="test", now=NOW).number == "INC-000048"
        history = session.scalars(select(IncidentHistory.kind)).all()
        assert history.count("created") == 4
    assert found(sessions, "АРМ не запускается") == ["INC-000045"]
    assert found(sessions, "ora 12541") == [] and found(sessions, "ORA-12541") == ["INC-000047"]
