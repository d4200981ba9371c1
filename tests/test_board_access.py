"""Who gets into the supervisors' board, and what they see there: tests written as the attacks.

A real uvicorn server over the desk's database (tests/boardsite.py); the login
link reaches staff by real mail through the SMTP sink. Attack mails go through
Dovecot and the whole pipeline before the board shows them.
"""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from sqlalchemy import select, update
from starlette.routing import Mount

from mailbot.register.models import AttachmentRow, Incident, Outbox, Request, Staff, WebLoginLink, WebSession
from mailbot.web.app import content_disposition
from tests.boardsite import BoardSite, add_request, add_staff, csrf
from tests.mailflow import body

SUPERVISOR, TP1, TP2 = "boss@tecon.example", "ivanov@tecon.example", "petrov@tecon.example"


@pytest.fixture
def site(desk):
    """The board; a supervisor (whom ТП1 Ivanov reports to), ТП1 Ivanov and ТП2 Petrov."""
    add_staff(desk, "boss")
    add_staff(desk, "ivanov", supervisor="boss")
    add_staff(desk, "petrov", tier="tp2")
    board = BoardSite(desk)
    yield board
    board.stop()


def sample_paths(desk) -> dict[str, str]:
    """A real value for each path parameter of the board's routes."""
    add_request(desk, "ТП-2026-900001", level=3)
    with desk.sessions.begin() as session:
        session.add(Incident(number="INC-000001", title="Сбой", symptoms="s", solution="r"))
    return {"number": quote("ТП-2026-900001"), "id": "1", "token": "x" * 43}


# ---------------------------------------------------------------- anonymous requests

def test_every_page_answers_an_anonymous_request_without_data(site, desk):
    """Every route but the log-in pages and the style sheet needs a session: a GET is sent to
    the log-in page with an empty body, anything else is refused; nothing of the register shows."""
    values = sample_paths(desk)
    client = site.client()
    checked = 0
    for route in site.site.app.routes:
        if isinstance(route, Mount) or route.path.startswith("/login"):
            continue
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m[1]], route.path)
        for method in sorted(route.methods or {"GET"}):
            answer = client.request(method, path)
            if method in ("GET", "HEAD"):
                assert answer.status_code == 303 and answer.headers["location"] == "/login", path
                assert answer.content == b"", path
            else:
                assert answer.status_code == 403, (method, path)
                assert "ТП-2026" not in answer.text and "INC-" not in answer.text
            checked += 1
    assert checked >= 10
    assert site.client().get("/files/1").status_code == 303


def test_a_forged_session_cookie_is_no_session(site, desk):
    sample_paths(desk)
    client = site.client(cookies={"mb_session": "A" * 43})
    answer = client.get("/requests")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"


# ---------------------------------------------------------------- the login link

def test_the_login_link_comes_by_mail_and_opens_a_session(site, desk):
    client = site.client()
    asked = site.ask_link(client, TP1)
    assert asked.status_code == 200 and 'id="sent"' in asked.text
    link = site.mailed_link(TP1)
    assert link.startswith(site.url + "/login/")
    answer = site.spend(client, link)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "mb_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = client.get("/requests")
    assert page.status_code == 200 and "Ivanov Сотрудник" in page.text and "ТП1" in page.text
    with desk.sessions() as session:  # neither token is kept as it is
        stored = session.scalars(select(WebSession.token_hash)).all() + \
            session.scalars(select(WebLoginLink.token_hash)).all()
    assert link.rsplit("/", 1)[1] not in stored and client.cookies["mb_session"] not in stored


def test_the_answer_is_the_same_for_unknown_inactive_and_registered_addresses(site, desk):
    """No account enumeration: the same page whoever asks; only an active staff member gets mail."""
    desk.add_staff("gone", active=False)
    pages = {}
    for address in (TP1, "stranger@evil.example", "gone@tecon.example", "ivanov@zavod.example"):
        answer = site.ask_link(site.client(), address)
        pages[address] = (answer.status_code, re.sub(r'value="[^"]+"', "", answer.text))
    assert len(set(pages.values())) == 1
    site.mailed_link(TP1)
    assert site.links_queued("stranger@evil.example") == site.links_queued("gone@tecon.example") == 0
    desk.run()
    assert desk.new_mail() == []  # nothing for anyone else


def test_a_forged_login_token_opens_nothing(site, desk):
    client = site.client()
    for token in ("x" * 43, "%00", "' OR 1=1 --", "Ж" * 43):
        page = client.get(f"/login/{quote(token, safe='')}")
        answer = client.post(f"/login/{quote(token, safe='')}", data={"csrf": csrf(page.text)},
                             headers={"origin": site.url})
        assert answer.status_code == 400 and 'id="invalid"' in answer.text
        assert "set-cookie" not in answer.headers or "mb_session" not in answer.headers["set-cookie"]
    assert client.get("/requests").status_code == 303


def test_an_expired_login_link_opens_nothing(site, desk):
    client = site.client()
    site.ask_link(client, TP1)
    link = site.mailed_link(TP1)
    desk.clock.advance(minutes=15, seconds=1)
    assert site.spend(client, link).status_code == 400
    assert client.get("/requests").status_code == 303


def test_a_login_link_works_once(site, desk):
    client = site.client()
    site.ask_link(client, TP1)
    link = site.mailed_link(TP1)
    assert site.spend(client, link).status_code == 303
    thief = site.client()
    assert site.spend(thief, link).status_code == 400
    assert thief.get("/requests").status_code == 303


def test_opening_the_link_does_not_spend_it(site, desk):
    """A mail scanner that fetches every link in a mail (GET) spends nothing: the POST does."""
    site.ask_link(site.client(), TP1)
    link = site.mailed_link(TP1)
    scanner = site.client()
    for _ in range(3):
        assert scanner.get(link.removeprefix(site.url)).status_code == 200
    assert scanner.get("/requests").status_code == 303
    assert site.spend(site.client(), link).status_code == 303


def test_the_link_points_at_the_configured_address_whatever_host_the_request_named(desk):
    """Host header poisoning: a log-in asked for through a forged Host still mails a link to the
    board's own public address."""
    add_staff(desk, "ivanov")
    board = BoardSite(desk, base_url="https://board.tecon.example")
    try:
        client = board.client()
        page = client.get("/login")
        client.post("/login", data={"email": TP1, "csrf": csrf(page.text)},
                    headers={"host": "evil.example", "x-forwarded-host": "evil.example"})
        assert board.mailed_link(TP1).startswith("https://board.tecon.example/login/")
    finally:
        board.stop()


def test_link_requests_are_limited_per_address_and_per_client(site, desk):
    """Mail bombing a staff member through the form: three links per address in 15 minutes;
    a client asking too often is told to wait."""
    for n in range(5):
        assert site.ask_link(site.client(), TP1).status_code == 200
    site.mailed_link(TP1)
    assert site.links_queued(TP1) == 3
    for n in range(20 - 5):
        site.ask_link(site.client(), f"nobody{n}@evil.example")
    answer = site.ask_link(site.client(), SUPERVISOR)
    assert answer.status_code == 429
    assert site.links_queued(SUPERVISOR) == 0
    desk.clock.advance(minutes=16)
    assert site.ask_link(site.client(), SUPERVISOR).status_code == 200
    site.mailed_link(SUPERVISOR)


# ---------------------------------------------------------------- CSRF

def test_a_form_without_its_csrf_token_is_refused(site, desk):
    client = site.client()
    client.get("/login")
    for data in ({"email": TP1}, {"email": TP1, "csrf": "forged"}):
        assert client.post("/login", data=data, headers={"origin": site.url}).status_code == 403
    assert site.links_queued(TP1) == 0


def test_a_form_posted_from_another_site_is_refused(site, desk):
    """Login CSRF and forced logout: another site's page posting to the board is refused,
    even with a valid token pair (the browser's Origin and Sec-Fetch-Site give it away)."""
    client = site.logged_in(TP1)
    token = csrf(client.get("/requests").text)
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
        assert client.post("/logout", data={"csrf": token}, headers=headers).status_code == 403
    assert client.get("/requests").status_code == 200


def test_logout_ends_the_session_on_the_server(site, desk):
    client = site.logged_in(TP1)
    stolen = client.cookies["mb_session"]
    answer = client.post("/logout", data={"csrf": csrf(client.get("/requests").text)},
                         headers={"origin": site.url})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    replay = site.client(cookies={"mb_session": stolen})
    assert replay.get("/requests").status_code == 303


def test_a_session_ends_when_it_expires_or_the_staff_member_is_deactivated(site, desk):
    first, second = site.logged_in(TP1), site.logged_in(SUPERVISOR)
    with desk.sessions.begin() as session:
        session.execute(update(Staff).where(Staff.login == "ivanov").values(active=False))
    assert first.get("/requests").status_code == 303
    assert second.get("/requests").status_code == 200
    desk.clock.advance(hours=12, seconds=1)
    assert second.get("/requests").status_code == 303


def test_cookies_are_secure_and_host_only_behind_tls(desk):
    add_staff(desk, "ivanov")
    board = BoardSite(desk, secure_cookies=True)
    try:
        answer = board.client().get("/login")
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("__Host-mb_csrf=") and "Secure" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Path=/" in cookie and "Domain" not in cookie
    finally:
        board.stop()


def test_every_response_carries_the_security_headers(site, desk):
    client = site.logged_in(SUPERVISOR)
    for path in ("/login", "/requests", "/sla", "/nothing-here", "/static/board.css"):
        headers = (client if path != "/login" else site.client()).get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none'
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert path == "/static/board.css" or headers["cache-control"] == "no-store"


# ---------------------------------------------------------------- roles

def op4_pair(desk) -> None:
    add_request(desk, "ТП-2026-900010", level=1, subject="Как настроить печать")
    add_request(desk, "ТП-2026-900011", level=3, status="escalated_op4", subject="Сбой обмена")
    add_request(desk, "ТП-2026-900012", level=4, parent="ТП-2026-900011", subject="Сбой обмена: ОП4")


def numbers(page: str) -> set[str]:
    return set(re.findall(r'data-number="([^"]+)"', page))


def test_tp1_cannot_see_op4_requests(site, desk):
    op4_pair(desk)
    client = site.logged_in(TP1)
    assert numbers(client.get("/requests").text) == {"ТП-2026-900010", "ТП-2026-900011"}
    answer = client.get("/requests/" + quote("ТП-2026-900012"))
    assert answer.status_code == 404 and "ОП4" not in answer.text.split("<main>")[1]
    assert "ТП-2026-900012" not in client.get("/requests/" + quote("ТП-2026-900011")).text
    assert client.get("/quarantine").status_code == 403
    assert "Карантин" not in client.get("/requests").text


def test_tp2_sees_op4_requests_and_their_parents_only(site, desk):
    op4_pair(desk)
    client = site.logged_in(TP2)
    assert numbers(client.get("/requests").text) == {"ТП-2026-900011", "ТП-2026-900012"}
    assert client.get("/requests/" + quote("ТП-2026-900010")).status_code == 404
    page = client.get("/requests/" + quote("ТП-2026-900012")).text
    assert "ТП-2026-900011" in page  # the link to the ОП3 request it came from
    assert client.get("/incidents").status_code == 200
    assert client.get("/quarantine").status_code == 403


def test_supervisors_see_everything(site, desk):
    """A supervisor is whoever someone reports to, or a login in web.supervisors."""
    op4_pair(desk)
    client = site.logged_in(SUPERVISOR)
    assert numbers(client.get("/requests").text) == {"ТП-2026-900010", "ТП-2026-900011",
                                                     "ТП-2026-900012"}
    assert client.get("/quarantine").status_code == 200
    board = BoardSite(desk, supervisors=("petrov",))
    try:
        assert board.logged_in(TP2).get("/quarantine").status_code == 200
    finally:
        board.stop()


def test_the_assignee_sees_his_own_request_whatever_its_level(site, desk):
    op4_pair(desk)
    add_request(desk, "ТП-2026-900013", level=4, parent="ТП-2026-900011", assignee="ivanov")
    client = site.logged_in(TP1)
    assert "ТП-2026-900013" in numbers(client.get("/requests").text)
    assert client.get("/requests/" + quote("ТП-2026-900013")).status_code == 200


# ---------------------------------------------------------------- what mail brings

def test_text_from_mail_is_shown_escaped(site, desk):
    """An attack mail: markup in the sender's name, the subject and the text is shown as text."""
    desk.write("ivanov@zavod.example", '<script>alert("s")</script> Не запускается АРМ',
               "<img src=x onerror=alert(1)> АРМ не запускается\n<iframe src=//evil.example>",
               name='"><script>alert(2)</script>')
    desk.run()
    number = desk.request().number
    client = site.logged_in(SUPERVISOR)
    for page in (client.get("/requests").text, client.get("/requests/" + quote(number)).text):
        assert "<script>" not in page and "<img" not in page and "<iframe" not in page
    page = client.get("/requests/" + quote(number)).text
    assert "&lt;script&gt;alert(&#34;s&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_file_named_as_a_script_is_downloaded_not_rendered(site, desk):
    """An attack mail carries an HTML file named like markup: the board only ever offers its
    bytes as a download, under a name that cannot break out of the header."""
    html = b"<html><script>alert(document.cookie)</script></html>"
    desk.write("ivanov@zavod.example", "Логи", "Прикладываю логи.",
               attachments=(('<script>alert(1)</script>".html', html),))
    desk.run()
    with desk.sessions() as session:
        file_id = session.scalar(select(AttachmentRow.id))
    client = site.logged_in(SUPERVISOR)
    page = client.get("/requests/" + quote(desk.request().number)).text
    assert f'href="/files/{file_id}" download' in page and "<script>alert(1)" not in page
    answer = client.get(f"/files/{file_id}")
    assert answer.status_code == 200 and answer.content == html
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-disposition"].startswith("attachment; ")
    assert "sandbox" in answer.headers["content-security-policy"]
    header = content_disposition('a"; filename=evil.exe\r\nX: y')
    assert "\r" not in header and "\n" not in header
    assert re.fullmatch(r'attachment; filename="[^"\\;]*"; filename\*=UTF-8\'\'[A-Za-z0-9%._~-]*', header)


def test_tp1_cannot_download_the_files_of_an_op4_request(site, desk):
    desk.write("ivanov@zavod.example", "Логи", "Логи во вложении.",
               attachments=(("log.txt", b"secret log"),))
    desk.run()
    with desk.sessions.begin() as session:
        request = session.scalar(select(Request))
        parent = add_request(desk, "ТП-2026-900020", level=3)
        request.level, request.parent_id = 4, parent
        file_id = session.scalar(select(AttachmentRow.id))
    assert site.logged_in(TP1).get(f"/files/{file_id}").status_code == 404
    assert site.logged_in(TP2).get(f"/files/{file_id}").content == b"secret log"


def test_the_login_mail_is_plain_text_to_the_staff_address_only(site, desk):
    site.ask_link(site.client(), TP1)
    link = site.mailed_link(TP1)
    with desk.sessions() as session:
        (row,) = session.scalars(select(Outbox).where(Outbox.kind == "web_login")).all()
    assert row.recipients == [TP1] and row.request_id is None
    mail = desk.sink.messages[-1].parsed()
    assert mail.get_content_type() == "text/plain" and "Auto-Submitted" in mail
    assert link in body(desk.sink.messages[-1]) and "15 минут" in body(desk.sink.messages[-1])
