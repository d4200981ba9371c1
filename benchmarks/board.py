"""The supervisors' board with 1,000,000 requests: server time of its pages (target < 200 ms).

Fills a fresh database on the machine's PostgreSQL (``--url``, default
postgresql://postgres@127.0.0.1:5432/postgres; the database is dropped at the
end unless ``--keep``) with ``--requests`` requests over four years (2 % of them
open, 5 % ОП4 with their ОП3 parents, 2,000 organisations, 40 staff, 5,000
incidents, a trail for the latest 1,000), then serves the board with uvicorn
and asks for each page several times over HTTP. The figure is the server time
the board reports in ``Server-Timing`` (from the request's arrival to the
response's headers: session check, queries, rendering). The client here,
httpx, adds some 40 ms of its own per request on a loopback connection (curl
takes 2-4 ms in all for the log-in page), so its round trip is not printed.

    .venv/bin/python benchmarks/board.py [--requests 1000000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailbot.clock import Clock  # noqa: E402
from mailbot.config import load_config, with_overrides  # noqa: E402
from mailbot.register import db  # noqa: E402
from mailbot.web.app import Board  # noqa: E402
from mailbot.web.queries import Key  # noqa: E402
from mailbot.web.serve import Site  # noqa: E402
from tests.servers import free_port, wait_for_port, with_database  # noqa: E402

FILL = """
INSERT INTO organizations (name, aliases, crm_id)
    SELECT 'ООО «Организация ' || g || '»', ARRAY['Орг' || g], 'ORG-' || g
    FROM generate_series(1, 2000) g;
INSERT INTO staff (login, full_name, email, tier, experience_years)
    SELECT 's' || g, 'Сотрудник ' || g, 's' || g || '@tecon.example',
           CASE WHEN g <= 30 THEN 'tp1' ELSE 'tp2' END, 6
    FROM generate_series(1, 40) g;
UPDATE staff SET supervisor_id = 1 WHERE id > 1;
INSERT INTO incidents (number, title, symptoms, solution)
    SELECT 'INC-' || lpad(g::text, 6, '0'), 'Ошибка ' || g || ': ' || (ARRAY['не запускается АРМ',
           'сбой обмена', 'зависает отчёт', 'не печатает', 'ошибка лицензии'])[1 + g % 5],
           'Симптомы инцидента ' || g, 'Решение инцидента ' || g
    FROM generate_series(1, 5000) g;
WITH base AS (
    SELECT g,
           now() - (:n - g) * interval '2 minutes' AS received,
           CASE WHEN g % 20 = 0 THEN 4 WHEN g % 20 = 19 THEN 3
                WHEN (g::bigint * 7919) % 100 < 35 THEN 1 WHEN (g::bigint * 7919) % 100 < 60 THEN 2 ELSE 3 END AS level,
           g > :n - :open AS open
    FROM generate_series(1, :n) g)
INSERT INTO requests (id, number, organization_id, requester_email, requester_name, subject,
                      level, status, parent_id, incident_id, assignee_id, received_at, due_at,
                      first_reaction_at, closed_at)
SELECT g, 'ТП-' || extract(year FROM received)::int || '-' || lpad(g::text, 7, '0'),
       1 + (g * 31) % 2000, 'user' || g % 50000 || '@org' || (g * 31) % 2000 || '.example',
       'Клиент ' || g % 50000,
       (ARRAY['Не запускается АРМ диспетчера', 'Как перепривязать ключ', 'Пришлите патч 2.4',
              'Ошибка при формировании отчёта', 'Сбой обмена с сервером', 'Настройка печати',
              'Зависает при сохранении', 'Не приходит рассылка', 'Вопрос по лицензии',
              'Обновление не устанавливается'])[1 + g % 10] || ' №' || g,
       level,
       CASE WHEN open AND g % 20 = 19 THEN 'escalated_op4'
            WHEN open THEN (ARRAY['open', 'awaiting_customer', 'new', 'resolved', 'open'])[1 + g % 5]
            WHEN g % 33 = 0 THEN 'rejected' ELSE 'closed' END,
       CASE WHEN level = 4 THEN g - 1 END,
       CASE WHEN g % 50 = 7 THEN 1 + g % 5000 END,
       1 + g % 40, received,
       CASE WHEN NOT open AND g % 33 = 0 THEN NULL
            ELSE received + (ARRAY[20, 40, 120, 180])[level] * interval '1 minute' END,
       CASE WHEN open AND g % 3 = 0 THEN NULL WHEN g % 33 = 0 THEN NULL
            ELSE received + ((g * 13) % 150 + 5) * interval '1 minute' END,
       CASE WHEN NOT open THEN received + interval '2 days' END
FROM base;
SELECT setval('requests_id_seq', :n);
INSERT INTO messages (request_id, direction, kind, sender, recipients, subject, body, sent_at, outbox_id)
    SELECT r, 'in', 'human', 'user@org.example', '{support@tecon.example}', 'Тема ' || r,
           repeat('Текст письма клиента. ', 40), now(), NULL
    FROM generate_series(:n - 999, :n) r, generate_series(1, 5) k;
INSERT INTO events (request_id, at, actor, kind, details)
    SELECT r, now() - k * interval '1 minute', 'system', 'status', '{"reason": "x"}'
    FROM generate_series(:n - 999, :n) r, generate_series(1, 6) k;
"""


def fill(url: str, count: int) -> float:
    started = time.perf_counter()
    engine = db.make_engine(url)
    db.init_schema(engine)
    engine.dispose()
    sql = FILL.replace(":n", str(count)).replace(":open", str(count // 50))
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def session_cookie(url: str, login: str) -> str:
    token = uuid.uuid4().hex + uuid.uuid4().hex[:11]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO web_sessions (staff_id, token_hash, created_at, expires_at)
                        SELECT id, %s, now(), now() + interval '1 day' FROM staff WHERE login = %s""",
                     (hashlib.sha256(token.encode()).hexdigest(), login))
    return token


def pages(url: str, count: int) -> list[tuple[str, str, str]]:
    """(what, who, path) of the pages to time."""
    with psycopg.connect(url) as conn:
        middle = conn.execute("SELECT due_at, id FROM requests WHERE id = %s", (count // 2,)).fetchone()
        detail = conn.execute("SELECT number FROM requests WHERE id = %s", (count - 10,)).fetchone()[0]
        op4 = conn.execute("SELECT number FROM requests WHERE level = 4 ORDER BY id DESC LIMIT 1").fetchone()[0]
    deep = Key(*middle).encode()
    return [
        ("register: open, by deadline", "s1", "/requests"),
        ("register: open, latest deadline first", "s1", "/requests?order=desc"),
        ("register: all, by deadline", "s1", "/requests?status=all"),
        ("register: all, 500,000 deep (keyset)", "s1", f"/requests?status=all&after={deep}"),
        ("register: all, latest first, 500,000 deep", "s1",
         f"/requests?status=all&order=desc&after={deep}"),
        ("register: closed", "s1", "/requests?status=closed"),
        ("register: open ОП2", "s1", "/requests?level=2"),
        ("register: all ОП4", "s1", "/requests?status=all&level=4"),
        ("register: open, one assignee", "s1", "/requests?assignee=5"),
        ("register: all, one assignee", "s1", "/requests?status=all&assignee=5"),
        ("register: all, one organisation", "s1",
         "/requests?status=all&org=" + quote("Организация 1234»")),
        ("register: open, organisations «Организация 1»", "s1",
         "/requests?org=" + quote("Организация 1")),
        ("register: all, text frequent («АРМ»)", "s1", "/requests?status=all&q=" + quote("АРМ")),
        ("register: all, text rare (a number)", "s1",
         "/requests?status=all&q=" + quote("0123456")),
        ("register: all, text absent", "s1", "/requests?status=all&q=" + quote("нетакого")),
        ("register: ТП1, open", "s2", "/requests"),
        ("register: ТП1, all", "s2", "/requests?status=all"),
        ("register: ТП2, open", "s35", "/requests"),
        ("register: ТП2, all", "s35", "/requests?status=all"),
        ("request page (5 mails, 6 events)", "s1", "/requests/" + quote(detail)),
        ("request page, ТП2, ОП4", "s35", "/requests/" + quote(op4)),
        ("SLA board (supervisor)", "s1", "/sla"),
        ("SLA board (ТП2)", "s35", "/sla"),
        ("known errors", "s1", "/incidents"),
        ("known errors: search", "s1", "/incidents?q=" + quote("зависает отчёт")),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    name = f"mb_board_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8'")
    url = with_database(args.url, name)
    engine = None
    try:
        print(f"filling {name} with {args.requests:,} requests ...", flush=True)
        print(f"filled in {fill(url, args.requests):.0f} s", flush=True)
        engine = db.make_engine(url)
        port = free_port()
        config = with_overrides(load_config(None, environ={}), database={"url": url},
                                web={"enabled": True, "port": port})
        site = Site("board", Board(config, db.make_sessionmaker(engine), Clock()).app(),
                    "127.0.0.1", port, config.web.public_url)
        site.bind()
        thread = threading.Thread(target=asyncio.run, args=(site.serve(),), daemon=True)
        thread.start()
        wait_for_port(port)
        cookies = {login: session_cookie(url, login) for login in ("s1", "s2", "s35")}
        worst = 0.0
        print(f"\n{'page':<48} {'rows':>5} {'server ms: median':>18} {'max':>7}")
        for what, who, path in pages(url, args.requests):
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                  cookies={"mb_session": cookies[who]})
            client.get(path)  # warm: plans cached, pages in memory
            server = []
            for _ in range(args.repeat):
                answer = client.get(path)
                assert answer.status_code == 200, (path, answer.status_code)
                server.append(float(answer.headers["server-timing"].split("dur=")[1]))
            rows = answer.text.count("data-number=")
            worst = max(worst, max(server))
            print(f"{what:<48} {rows:>5} {statistics.median(server):>18.1f} {max(server):>7.1f}",
                  flush=True)
        print(f"\nslowest page: {worst:.1f} ms server time (target < 200 ms)")
        site.stop()
        thread.join(timeout=10)
        return 0 if worst < 200 else 1
    finally:
        if engine is not None:
            engine.dispose()
        if not args.keep:
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        else:
            print(f"kept {url}")


if __name__ == "__main__":
    sys.exit(main())
