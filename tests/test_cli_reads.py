"""The command line's read commands (issue 16 §5): what they print, line for line, and how they
answer when the database is down or has no schema yet.

The register below holds a little of everything these commands show: a request with its
organisation, incident, ОП4, follow-up, files sent and asked, and a timeline; staff with a
supervisor and a retired member; incidents with their history and a duplicate; quarantined
mail; undeliverable addresses. Text from mail carries control and bidi characters: the
terminal gets them as one clean line.
"""
from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from mailbot.cli.main import EX_CONFIG, EX_TEMPFAIL, EX_USAGE, main
from mailbot.register import db
from mailbot.register.connection import conninfo
from tests.servers import free_port, libpq_url

RLO, C1 = "\u202e", "\x9b"
REGISTER = f"""
INSERT INTO organizations (id, name) VALUES (1, 'ООО «Завод»');
INSERT INTO staff (id, login, full_name, email, tier, department, experience_years, active,
                   supervisor_id) VALUES
    (1, 'petrova', 'Петрова Анна', 'petrova@tecon.example', 'tp2', 'Отдел разработки', 12, true, NULL),
    (2, 'sidorov', 'Сидоров Олег', 'sidorov@tecon.example', 'tp1', '', 7, true, 1),
    (3, 'orlov', 'Орлов Пётр', 'orlov@tecon.example', 'tp1', 'Отдел сопровождения', 3, false, 1);
INSERT INTO incidents (id, number, title, symptoms, solution, product, version, status,
                       created_by, created_at, updated_at) VALUES
    (1, 'INC-000001', 'АРМ диспетчера не запускается после обновления драйверов',
     E'При запуске АРМ окно ошибки\\nи программа закрывается', 'Переустановите драйвер ключа',
     'АС ТЕКОН', '3.4', 'solved', 1, '2026-11-20 09:00+03', '2026-11-24 12:30+03'),
    (3, 'INC-000003', 'Ошибка 0x80070005 при запуске службы опроса', '', '', '', '', 'new',
     NULL, '2026-11-21 10:00+03', '2026-11-21 10:00+03');
INSERT INTO incidents (id, number, title, status, duplicate_of, created_at, updated_at) VALUES
    (2, 'INC-000002', 'Не стартует АРМ после обновления', 'duplicate', 1,
     '2026-11-22 11:00+03', '2026-11-22 11:05+03');
INSERT INTO requests (id, number, organization_id, requester_email, requester_name, channel,
                      subject, level, status, incident_id, received_at, due_at) VALUES
    (1, 'ТП-2026-000001', 1, 'ivanov@zavod.example', 'Иванов{RLO}Иван', 'email',
     'АРМ не запускается{C1} после обновления', 3, 'open', 1,
     '2026-11-25 10:00:05+03', '2026-11-25 13:00+03'),
    (3, 'ТП-2026-000003', NULL, 'ivanov@zavod.example', '', 'phone', 'Ещё вопрос', NULL, 'new',
     NULL, '2026-11-25 12:00+03', NULL),
    (4, 'ТП-2026-000004', NULL, 'x@spam.example', 'Бот', 'email',
     'Счёт {RLO}gpj.exe' || repeat(' очень длинная тема', 5), 1, 'closed', NULL,
     '2026-11-25 12:30+03', '2026-11-25 12:50+03');
INSERT INTO requests (id, number, requester_email, subject, level, status, parent_id,
                      received_at) VALUES
    (2, 'ТП-2026-000002', 'tp1@tecon.example', 'ОП4: АРМ не запускается', 4, 'escalated_op4', 1,
     '2026-11-25 11:00+03');
UPDATE requests SET follows_id = 1 WHERE id = 3;
INSERT INTO inbound (id, dedup_key, source, raw, size, status, received_at) VALUES
    (1, 'mid:a@zavod', 'imap:support/INBOX', 'From: a', 7, 'processed', '2026-11-25 10:00+03'),
    (2, 'mid:b@zavod', 'ingest', convert_to(E'From: x@spam.example\\r\\nSubject: \\u202eBad\\r\\n'
                                            '\\r\\nbody', 'UTF8'), 49, 'quarantined',
     '2026-11-25 12:40+03'),
    (3, 'mid:c@zavod', 'ingest', 'From: c', 7, 'processed', '2026-11-25 12:41+03');
INSERT INTO messages (id, request_id, direction, inbound_id, kind, sender, subject) VALUES
    (1, 1, 'in', 1, 'human', 'Иванов <ivanov@zavod.example>', 'АРМ не запускается{C1}'),
    (2, 1, 'in', NULL, 'human', 'ivanov@zavod.example', 'Re: логи');
INSERT INTO attachments (id, message_id, filename, original_filename, content_type, size,
                         sha256) VALUES
    (1, 1, 'screen.png', NULL, 'image/png', 2048, repeat('a', 64)),
    (2, 2, 'invoicegpj.exe', 'invoice{RLO}gpj.exe', 'application/octet-stream', 2, repeat('b', 64));
INSERT INTO events (request_id, at, actor, kind, from_status, to_status, message_id) VALUES
    (1, '2026-11-25 10:00:05+03', 'system', 'created', NULL, 'new', 1),
    (1, '2026-11-25 10:00:05+03', 'system', 'status', 'new', 'open', NULL),
    (1, '2026-11-25 10:20+03', 'sidorov', 'level', NULL, NULL, NULL),
    (1, '2026-11-25 10:30+03', 'ivanov@zavod.example{C1}', 'message_in', NULL, NULL, 2),
    (2, '2026-11-25 11:00+03', 'sidorov', 'created', NULL, 'escalated_op4', NULL);
INSERT INTO deliveries (request_id, recipient, files, status, confirmed_by, confirmed_at,
                        failure, settled_at, settled_by, note, reminders, created_at) VALUES
    (1, 'ivanov@zavod.example', '{{patch.zip,readme.txt}}', 'confirmed', 'mdn',
     '2026-11-25 11:10+03', NULL, '2026-11-25 11:10+03', 'ivanov@zavod.example', NULL, 0,
     '2026-11-25 11:00+03'),
    (1, 'ivanov@zavod.example', '{{setup.exe}}', 'failed', NULL, NULL,
     E'550 5.7.1 rejected\\nsecond line', '2026-11-25 11:30+03', 'smtp', NULL, 0,
     '2026-11-25 11:20+03'),
    (1, 'ivanov@zavod.example', '{{logs.txt}}', 'waived', NULL, NULL, NULL,
     '2026-11-25 12:00+03', 'sidorov', 'клиент подтвердил по телефону', 0, '2026-11-25 11:40+03'),
    (1, 'ivanov@zavod.example', '{{driver.zip}}', 'sent', NULL, NULL, NULL, NULL, NULL, NULL, 2,
     '2026-11-25 12:10+03');
INSERT INTO file_requests (request_id, asked, asked_by, status, reminders, received_at,
                           created_at) VALUES
    (1, 'логи, скриншот', 'sidorov', 'received', 0, '2026-11-25 10:30+03', '2026-11-25 10:20+03'),
    (1, 'дамп', 'sidorov', 'waiting', 1, NULL, '2026-11-25 10:40+03'),
    (1, 'конфиг', 'sidorov', 'cancelled', 0, NULL, '2026-11-25 10:45+03');
INSERT INTO incident_history (incident_id, at, actor, kind, changes, request_id) VALUES
    (1, '2026-11-20 09:00+03', 'petrova', 'created', '{{}}', NULL),
    (1, '2026-11-24 12:30+03', 'petrova', 'edited',
     '{{"solution": ["", "Переустановите драйвер ключа{'; очень подробно' * 4}"],
       "status": ["new", "solved"]}}', NULL),
    (1, '2026-11-25 10:20+03', 'sidorov', 'linked', '{{}}', 1);
INSERT INTO quarantine (id, inbound_id, stage, error, created_at, resolved_at, resolution) VALUES
    (1, 2, 'parse', E'MIME error:\\nbad header {C1}', '2026-11-25 12:40+03', NULL, NULL),
    (2, 3, 'rules', 'resolved long ago', '2026-11-25 12:41+03', '2026-11-25 12:45+03', 'dropped');
INSERT INTO undeliverable_addresses (address, reply, refused_at, source) VALUES
    ('gone@zavod.example', E'550 5.1.1 user unknown\\r\\n(mailbox {C1}gone)',
     '2026-11-24 09:15+03', 'smtp'),
    ('full@zavod.example', '552 mailbox full', '2026-11-23 18:00+03', 'dsn');
"""


@pytest.fixture
def register(database_url, monkeypatch):
    """A register as above, in a database whose time zone is Moscow's."""
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    engine.dispose()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET timezone = \'Europe/Moscow\'')
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(REGISTER)
    monkeypatch.setenv("MAILBOT_DATABASE_URL", database_url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    return database_url


def printed(capsys, *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code, capsys.readouterr()
    out = capsys.readouterr()
    return out.out if code == 0 else out.err


def test_requests_list_shows_the_latest_first_one_line_each(register, capsys):
    """Number, status, level, when received, from whom, the subject's first 60 characters."""
    assert printed(capsys, "requests", "list") == """\
ТП-2026-000004  closed                 ОП1  2026-11-25 12:30  x@spam.example  Счёт gpj.exe очень длинная тема очень длинная тема очень дли
ТП-2026-000003  new                    -    2026-11-25 12:00  ivanov@zavod.example  Ещё вопрос
ТП-2026-000002  escalated_op4          ОП4  2026-11-25 11:00  tp1@tecon.example  ОП4: АРМ не запускается
ТП-2026-000001  open                   ОП3  2026-11-25 10:00  ivanov@zavod.example  АРМ не запускается после обновления
"""
    assert printed(capsys, "requests", "list", "--status", "open") == """\
ТП-2026-000001  open                   ОП3  2026-11-25 10:00  ivanov@zavod.example  АРМ не запускается после обновления
"""
    assert printed(capsys, "requests", "list", "--limit", "2") == """\
ТП-2026-000004  closed                 ОП1  2026-11-25 12:30  x@spam.example  Счёт gpj.exe очень длинная тема очень длинная тема очень дли
ТП-2026-000003  new                    -    2026-11-25 12:00  ivanov@zavod.example  Ещё вопрос
"""


def test_requests_show_gives_the_card_the_files_the_links_and_the_timeline(register, capsys):
    """Every delivery of files as it stands (sent, confirmed, failed, waived), the files asked,
    the incident, the ОП4 and follow-up links, and each event with its mail's subject."""
    assert printed(capsys, "requests", "show", "ТП-2026-000001") == """\
ТП-2026-000001: АРМ не запускается после обновления
  status:        open
  level:         ОП3
  from:          ИвановИван <ivanov@zavod.example>
  organisation:  ООО «Завод»
  channel:       email
  received:      2026-11-25 10:00:05 MSK
  due:           2026-11-25 13:00 MSK
  followed by:   ТП-2026-000003
  files sent:    2026-11-25 11:00 patch.zip, readme.txt → ivanov@zavod.example: confirmed by mdn 2026-11-25 11:10 by ivanov@zavod.example
  files sent:    2026-11-25 11:20 setup.exe → ivanov@zavod.example: FAILED 2026-11-25 11:30: 550 5.7.1 rejected second line by smtp
  files sent:    2026-11-25 11:40 logs.txt → ivanov@zavod.example: closed unconfirmed 2026-11-25 12:00 by sidorov «клиент подтвердил по телефону»
  files sent:    2026-11-25 12:10 driver.zip → ivanov@zavod.example: AWAITING CONFIRMATION (reminders: 2)
  files asked:   2026-11-25 10:20 логи, скриншот (by sidorov): received 2026-11-25 10:30
  files asked:   2026-11-25 10:40 дамп (by sidorov): WAITING (reminders: 1)
  files asked:   2026-11-25 10:45 конфиг (by sidorov): cancelled
  incident:      [INC-000001] solved АРМ диспетчера не запускается после обновления драйверов
  ОП4:           ТП-2026-000002 (escalated_op4)
timeline:
  2026-11-25 10:00:05  system                       created None → new  «АРМ не запускается»
  2026-11-25 10:00:05  system                       status new → open
  2026-11-25 10:20:00  sidorov                      level
  2026-11-25 10:30:00  ivanov@zavod.example         message_in  «Re: логи»
"""
    assert printed(capsys, "requests", "show", "ТП-2026-000002") == """\
ТП-2026-000002: ОП4: АРМ не запускается
  status:        escalated_op4
  level:         ОП4
  from:           <tp1@tecon.example>
  organisation:  -
  channel:       email
  received:      2026-11-25 11:00:00 MSK
  due:           -
  ОП4 of:        ТП-2026-000001
timeline:
  2026-11-25 11:00:00  sidorov                      created None → escalated_op4
"""
    assert printed(capsys, "requests", "show", "ТП-2026-000003") == """\
ТП-2026-000003: Ещё вопрос
  status:        new
  level:         -
  from:           <ivanov@zavod.example>
  organisation:  -
  channel:       phone
  received:      2026-11-25 12:00:00 MSK
  due:           -
  follows:       ТП-2026-000001
timeline:
"""
    assert printed(capsys, "requests", "show", "ТП-2026-000004") == """\
ТП-2026-000004: Счёт gpj.exe очень длинная тема очень длинная тема очень длинная тема очень длинная тема очень длинная тема
  status:        closed
  level:         ОП1
  from:          Бот <x@spam.example>
  organisation:  -
  channel:       email
  received:      2026-11-25 12:30:00 MSK
  due:           2026-11-25 12:50 MSK
timeline:
"""


def test_requests_files_lists_every_file_of_the_trail(register, capsys):
    """The stored name, and the name the mail gave when it differs (cleaned for the terminal)."""
    assert printed(capsys, "requests", "files", "ТП-2026-000001") == """\
     1        2048 B  Иванов <ivanov@zavod.example>  screen.png
     2           2 B  ivanov@zavod.example           invoicegpj.exe  (named in the mail: 'invoicegpj.exe')
2 file(s)
"""
    assert printed(capsys, "requests", "files", "ТП-2026-000003") == """\
0 file(s)
"""


def test_staff_list_shows_tiers_retired_members_and_supervisors(register, capsys):
    """By tier, then login."""
    assert printed(capsys, "staff", "list") == """\
orlov          tp1 retired  3 y  orlov@tecon.example            Орлов Пётр — Отдел сопровождения; supervisor petrova
sidorov        tp1 active   7 y  sidorov@tecon.example          Сидоров Олег — -; supervisor petrova
petrova        tp2 active  12 y  petrova@tecon.example          Петрова Анна — Отдел разработки
"""


def test_undeliverable_list_shows_each_address_with_the_reply(register, capsys):
    """Oldest first; the reply on one line."""
    assert printed(capsys, "undeliverable", "list") == """\
2026-11-23 18:00  dsn  full@zavod.example                       552 mailbox full
2026-11-24 09:15  smtp gone@zavod.example                       550 5.1.1 user unknown (mailbox gone)
2 undeliverable address(es)
"""


def test_quarantine_list_and_show_the_open_items(register, capsys):
    """Only unresolved items; `show` gives the stored header."""
    assert printed(capsys, "quarantine", "list") == """\
     1  2026-11-25 12:40  parse            49 B  MIME error: bad header
1 message(s) in quarantine
"""
    assert printed(capsys, "quarantine", "show", "1") == """\
item 1, inbound 2 from ingest, 49 bytes
stage: parse
error: MIME error: bad header
resolved: no

From: x@spam.example
Subject: Bad
"""


def test_kb_list_newest_first_by_status(register, capsys):
    """The status as staff name it (Russian or English)."""
    assert printed(capsys, "kb", "list") == """\
[INC-000003] new           Ошибка 0x80070005 при запуске службы опроса
[INC-000002] duplicate     Не стартует АРМ после обновления
[INC-000001] solved        АРМ диспетчера не запускается после обновления драйверов
"""
    assert printed(capsys, "kb", "list", "--status", "решён") == """\
[INC-000001] solved        АРМ диспетчера не запускается после обновления драйверов
"""
    assert printed(capsys, "kb", "list", "--limit", "1") == """\
[INC-000003] new           Ошибка 0x80070005 при запуске службы опроса
"""


def test_kb_show_gives_the_fields_the_requests_and_the_history(register, capsys):
    """Numbers as staff write them (`INC-1`, look-alike letters) find the incident."""
    assert printed(capsys, "kb", "show", "INC-1") == """\
[INC-000001] АРМ диспетчера не запускается после обновления драйверов
  status:     solved
  product:    АС ТЕКОН 3.4
  created:    2026-11-20 09:00 by petrova
  updated:    2026-11-24 12:30
symptoms:
  При запуске АРМ окно ошибки
  и программа закрывается
solution:
  Переустановите драйвер ключа
requests:
  ТП-2026-000001  ОП3  open                   АРМ не запускается после обновления
history:
  2026-11-20 09:00  petrova        created
  2026-11-24 12:30  petrova        edited  status: new → solved; solution: - → Переустановите драйвер ключа; очень подробно; очень подро…
  2026-11-25 10:20  sidorov        linked (ТП-2026-000001)
"""
    assert printed(capsys, "kb", "show", "[ІNС-000002]") == """\
[INC-000002] Не стартует АРМ после обновления
  status:     duplicate of [INC-000001]
  product:    -
  created:    2026-11-22 11:00 by -
  updated:    2026-11-22 11:05
symptoms:
  -
solution:
  -
requests:
  -
history:
"""


def test_kb_search_ranks_with_the_reason(register, capsys):
    """The same search as the daemon's; duplicates are not found."""
    assert printed(capsys, "kb", "search", "не запускается АРМ") == """\
[INC-000001]  4.94 solved        АРМ диспетчера не запускается после обновления драйверов
        все слова запроса (арм, запуска)
"""
    assert printed(capsys, "kb", "search", "0x80070005") == """\
[INC-000003]  7.38 new           Ошибка 0x80070005 при запуске службы опроса
        код ошибки 0x80070005; все слова запроса (0x80070005)
"""
    assert printed(capsys, "kb", "search", "принтер") == """\
nothing found
"""


def test_what_is_not_there_is_one_line_and_an_exit_code(register, capsys):
    assert printed(capsys, "requests", "show", "ТП-2026-000404", code=1) == \
        "mailbot: no request ТП-2026-000404\n"
    assert printed(capsys, "requests", "files", "ТП-2026-000404", code=1) == \
        "mailbot: no request ТП-2026-000404\n"
    assert printed(capsys, "kb", "show", "INC-404", code=EX_USAGE) == "mailbot: no incident INC-404\n"
    assert printed(capsys, "quarantine", "show", "404", code=1) == "mailbot: no quarantine item 404\n"


def test_an_empty_register_says_so(database_url, monkeypatch, capsys):
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    engine.dispose()
    monkeypatch.setenv("MAILBOT_DATABASE_URL", database_url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    assert printed(capsys, "requests", "list") == "no requests\n"
    assert printed(capsys, "staff", "list") == "no staff\n"
    assert printed(capsys, "undeliverable", "list") == "0 undeliverable address(es)\n"
    assert printed(capsys, "quarantine", "list") == "0 message(s) in quarantine\n"
    assert printed(capsys, "kb", "list") == "no incidents\n"
    assert printed(capsys, "kb", "search", "не запускается") == "nothing found\n"


def test_the_configured_url_reaches_the_database_in_each_of_its_forms(register, monkeypatch, capsys):
    """database.url is SQLAlchemy's (postgresql+psycopg://) or libpq's (postgresql://,
    postgres://); the read commands give libpq the same address, password and options."""
    rest = register.split("://", 1)[1]
    for scheme in ("postgresql+psycopg", "postgresql", "postgres", "postgresql+psycopg2"):
        monkeypatch.setenv("MAILBOT_DATABASE_URL", f"{scheme}://{rest}")
        assert printed(capsys, "staff", "list").startswith("orlov "), scheme
    assert conninfo("postgresql+psycopg://mb:p%40ss@db.example:5433/mailbot?sslmode=require") == \
        "postgresql://mb:p%40ss@db.example:5433/mailbot?sslmode=require"
    monkeypatch.setenv("MAILBOT_DATABASE_URL", f"mysql://{rest}")
    assert printed(capsys, "staff", "list", code=EX_CONFIG) == \
        f"mailbot: config error: database.url: expected a postgresql:// URL, got 'mysql://{rest}'\n"


# ---------------------------------------------------------------- as a process

READS = (("requests", "list"), ("requests", "show", "ТП-2026-000001"),
         ("requests", "files", "ТП-2026-000001"), ("staff", "list"), ("undeliverable", "list"),
         ("quarantine", "list"), ("quarantine", "show", "1"), ("kb", "list"),
         ("kb", "show", "INC-000001"), ("kb", "search", "не запускается АРМ"))


def mailbot(database_url: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailbot", *argv], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "MAILBOT_DATABASE_URL": database_url})


def test_the_read_commands_do_not_load_sqlalchemy(register):
    """They read with plain SQL (mailbot/register/listing.py): a command answers at once."""
    script = ("import sys\nfrom mailbot.cli.main import main\n"
              f"for argv in {READS!r}:\n    assert main(list(argv)) == 0, argv\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('sqlalchemy', 'jinja2', 'mailparser', 'lxml', 'apscheduler')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "MAILBOT_DATABASE_URL": register})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_a_database_that_is_down_is_one_line_and_exit_75(database_url):
    """systemd and cron see a temporary failure, the operator one line saying why."""
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/mailbot"
    for argv in READS:
        done = mailbot(down, *argv)
        assert done.returncode == EX_TEMPFAIL and done.stdout == "", argv
        assert done.stderr.startswith("mailbot: database unavailable: connection failed: "), argv
        assert "Connection refused" in done.stderr and done.stderr.count("\n") == 1, argv


def test_a_database_without_the_schema_gets_it_first(database_url):
    """As the daemon does: an empty database is given the schema (logged), then read."""
    done = mailbot(database_url, "requests", "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no requests\n"
    assert f"database schema created (version {db.latest_version()})" in done.stderr
    done = mailbot(database_url, "staff", "list")
    assert (done.returncode, done.stdout, done.stderr) == (0, "no staff\n", "")
