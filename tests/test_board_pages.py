"""What the board shows: the register (filters, deadline order, keyset pages), a request's page,
the SLA board, the known errors and the quarantine."""
from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import select

from mailbot.register.models import Inbound, Incident, Quarantine, Request
from mailbot.web.queries import Key
from tests.boardsite import BoardSite, add_request, add_staff

SUPERVISOR = "boss@tecon.example"


@pytest.fixture
def site(desk):
    add_staff(desk, "boss")
    add_staff(desk, "ivanov", supervisor="boss")
    add_staff(desk, "sidorov", supervisor="boss")
    board = BoardSite(desk, page_size=5)
    yield board
    board.stop()


@pytest.fixture
def client(site):
    return site.logged_in(SUPERVISOR)


def listed(client, query: str = "") -> list[str]:
    return re.findall(r'data-number="([^"]+)"', client.get("/requests" + query).text)


def walk(client, query: str) -> list[str]:
    """Every page of the register from ``query`` on, following «Дальше»."""
    seen, path = [], "/requests" + query
    while path:
        page = client.get(path).text
        seen += re.findall(r'data-number="([^"]+)"', page)
        more = re.search(r'href="([^"]+)" id="next"', page)
        path = more[1].replace("&amp;", "&") if more else None
        assert len(seen) < 100
    return seen


def test_the_register_pages_through_every_request_once_in_deadline_order(site, client, desk):
    """Keyset pages: equal deadlines, no deadline at all (last), both directions."""
    now = desk.clock.now()
    expected = []
    for n in range(23):
        due = None if n % 7 == 6 else timedelta(minutes=10 * (n % 4))  # ties, and no deadline
        add_request(desk, f"ТП-2026-9{n:05d}", received=now - timedelta(hours=1), due=due)
        expected.append((due is None, due or timedelta(0), n))
    order = [f"ТП-2026-9{n:05d}" for *_, n in sorted(expected)]
    assert walk(client, "?") == order
    assert walk(client, "?order=desc") == order[::-1]
    assert len(listed(client)) == 5


def test_the_register_filters(site, client, desk):
    add_request(desk, "ТП-2026-900001", level=1, subject="Перепривязка ключа", assignee="ivanov",
                organization="ООО «Завод»")
    add_request(desk, "ТП-2026-900002", level=3, subject="Не запускается АРМ", assignee="sidorov",
                organization="АО «Старый клиент»")
    add_request(desk, "ТП-2026-900003", level=2, status="closed", subject="Патч 2.4")
    add_request(desk, "ТП-2026-900004", level=None, status="awaiting_contact_info", due=None)
    with desk.sessions() as session:
        ivanov = session.scalar(select(Request.assignee_id).where(Request.number == "ТП-2026-900001"))
    assert set(listed(client)) == {"ТП-2026-900001", "ТП-2026-900002", "ТП-2026-900004"}
    assert listed(client, "?status=finished") == ["ТП-2026-900003"]
    assert len(listed(client, "?status=all")) == 4
    assert listed(client, "?status=awaiting_contact_info") == ["ТП-2026-900004"]
    assert listed(client, "?level=3") == ["ТП-2026-900002"]
    assert listed(client, "?level=0") == ["ТП-2026-900004"]
    assert listed(client, f"?assignee={ivanov}") == ["ТП-2026-900001"]
    assert set(listed(client, "?assignee=0")) == {"ТП-2026-900004"}
    assert listed(client, "?org=" + quote("завод")) == ["ТП-2026-900001"]
    assert listed(client, "?org=" + quote("Старый")) == ["ТП-2026-900002"]  # an alias too
    assert listed(client, "?org=nothing") == []
    assert listed(client, "?q=" + quote("арм")) == ["ТП-2026-900002"]
    assert listed(client, "?q=900003&status=all") == ["ТП-2026-900003"]
    assert listed(client, "?q=" + quote("100%_")) == []  # LIKE wildcards are literal
    assert listed(client, "?status=nonsense&level=9&assignee=x&after=junk")  # ignored, not errors


def test_an_overdue_request_is_marked_and_one_due_within_the_hour_too(site, client, desk):
    now = desk.clock.now()
    add_request(desk, "ТП-2026-900001", received=now - timedelta(hours=3), due=timedelta(hours=1))
    add_request(desk, "ТП-2026-900002", received=now - timedelta(minutes=10), due=timedelta(minutes=40))
    add_request(desk, "ТП-2026-900003", received=now - timedelta(hours=3), due=timedelta(hours=1),
                reacted=timedelta(minutes=30))
    page = client.get("/requests").text
    rows = {number: css for css, number in re.findall(r'<tr class="(\w*)" data-number="([^"]+)"', page)}
    assert rows == {"ТП-2026-900001": "overdue", "ТП-2026-900002": "soon", "ТП-2026-900003": ""}
    assert "просрочен" in page


def test_the_request_page_shows_the_trail_with_files_and_links(site, client, desk):
    """Timeline, the mail in and out (the files of both), the incident and the ОП4 link."""
    desk.add_incident("INC-000045", "Ошибка запуска АРМ", "не запускается", "переустановить драйвер")
    desk.write("ivanov@zavod.example", "Не запускается АРМ", "АРМ не запускается, лог во вложении.",
               attachments=(("armlog.txt", b"log"),))
    desk.run()
    number = desk.request().number
    with desk.sessions.begin() as session:
        request = session.scalar(select(Request))
        request.incident_id = session.scalar(select(Incident.id))
    add_request(desk, "ТП-2026-900099", level=4, parent=number)
    page = client.get("/requests/" + quote(number)).text
    assert "Не запускается АРМ" in page and "armlog.txt" in page
    assert "зарегистрирован" in page  # the created event
    assert 'href="/incidents/INC-000045"' in page and "Ошибка запуска АРМ" in page
    assert "ТП-2026-900099" in page
    assert page.count('class="message out"') >= 2  # acknowledgement and the staff notice
    assert "Исходящее" in page and "Входящее" in page
    child = client.get("/requests/" + quote("ТП-2026-900099")).text
    assert f'href="/requests/{quote(number)}"' in child
    assert client.get("/requests/" + quote("ТП-2026-000404")).status_code == 404


def test_the_sla_board_counts_overdue_and_due_soon_per_level_and_assignee(site, client, desk):
    now = desk.clock.now()
    add_request(desk, "ТП-2026-900001", level=1, received=now - timedelta(hours=2),
                due=timedelta(minutes=20), assignee="ivanov")  # overdue
    add_request(desk, "ТП-2026-900002", level=3, received=now - timedelta(minutes=90),
                due=timedelta(hours=2), assignee="ivanov")  # due within the hour
    add_request(desk, "ТП-2026-900003", level=3, received=now - timedelta(hours=5),
                due=timedelta(hours=2), reacted=timedelta(hours=1), assignee="sidorov")  # met
    add_request(desk, "ТП-2026-900004", level=3, received=now - timedelta(hours=6),
                due=timedelta(hours=2), reacted=timedelta(hours=3), status="closed")  # late
    page = client.get("/sla").text
    urgent = page.split('id="urgent"')[1].split("</table>")[0]
    assert re.findall(r'<tr class="(\w+)" data-number="([^"]+)"', urgent) == [
        ("overdue", "ТП-2026-900001"), ("soon", "ТП-2026-900002")]
    by_level = page.split('id="by-level"')[1].split("</table>")[0]
    cells = [re.findall(r"<td>([^<]*)</td>", row) for row in by_level.split("<tr")[2:]]
    assert ["ОП1", "1", "1", "1", "0"] in cells and ["ОП3", "2", "1", "0", "1"] in cells
    assert "Ivanov Сотрудник" in page.split('id="by-assignee"')[1]
    met = page.split('id="met"')[1].split("</table>")[0]
    assert "50 % (1 из 2)" in met  # ОП3 this week: one in time, one late
    assert "0 % (0 из 1)" in met  # ОП1: overdue


def test_the_known_errors_are_listed_and_searched(site, client, desk):
    desk.add_incident("INC-000001", "Не запускается АРМ диспетчера", "АРМ зависает при запуске",
                      "Переустановить драйвер ключа")
    desk.add_incident("INC-000002", "Ошибка печати", "Принтер не печатает отчёт", "Обновить драйвер")
    assert client.get("/incidents").text.count('href="/incidents/') == 2
    found = client.get("/incidents?q=" + quote("запуске")).text
    assert "INC-000001" in found and "INC-000002" not in found
    page = client.get("/incidents/INC-000002").text
    assert "Принтер не печатает отчёт" in page and "Обновить драйвер" in page


def test_the_quarantine_shows_the_reason(site, client, desk):
    with desk.sessions.begin() as session:
        inbound = Inbound(dedup_key="sha256:x", source="imap:support/INBOX", raw=b"x", size=1,
                          status="quarantined")
        session.add(inbound)
        session.flush()
        session.add(Quarantine(inbound_id=inbound.id, stage="parse",
                               error="too large: <b>52 MB</b>"))
    page = client.get("/quarantine").text
    assert "разбор письма" in page and "too large: &lt;b&gt;52 MB&lt;/b&gt;" in page


def test_keys_of_the_register_pages_survive_the_url():
    from datetime import datetime, timezone

    moment = datetime(2026, 11, 25, 7, 0, 0, 123456, tzinfo=timezone.utc)
    for key in (Key(moment, 17), Key(None, 5)):
        assert Key.decode(key.encode()) == key
    assert Key.decode("1_2_3") is None and Key.decode("") is None
