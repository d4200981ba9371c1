"""Supervisors' digests of what is overdue or due soon (issue 18; docs/workflow.md, "Digests").

The team: chief ← boss ← (sidorov, kozlov); boss2 ← petrova; lonely ← idle (nothing due);
the heads of support get every item. Digests go at 09:00 and 14:00 on working days.
"""
from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, update

from mailbot.cli.admin import edit_staff
from mailbot.register.models import Request, SlaDigest, Staff
from tests.mailflow import Desk
from tests.servers import Received
from tests.slaclock import BOSS, CHIEF, CUSTOMER, HEADS, configure, msk, tick

BOSS2, LONELY = "boss2@tecon.example", "lonely@tecon.example"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "sla"  # kept, git-ignored
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def teams(desk: Desk, **sla) -> None:
    configure(desk, digest_times=("09:00", "14:00"), supervisor_addresses=(HEADS,), **sla)
    for login in ("chief", "boss", "boss2", "lonely"):
        desk.add_staff(login, years=20, department="Руководство")
    for login in ("sidorov", "kozlov", "petrova", "idle"):
        desk.add_staff(login, years=7)
    with desk.sessions.begin() as session:
        for login, boss in (("boss", "chief"), ("sidorov", "boss"), ("kozlov", "boss"),
                            ("petrova", "boss2"), ("idle", "lonely")):
            edit_staff(session, login, supervisor=boss)


def request_for(desk: Desk, login: str | None, subject: str, text: str, at) -> str:
    """A customer's request at ``at``, then given to ``login`` (None: nobody)."""
    desk.clock.set(at)
    desk.write(CUSTOMER, subject, text)
    desk.run()
    desk.new_mail()
    number = desk.request().number
    with desk.sessions.begin() as session:
        staff_id = session.scalar(select(Staff.id).where(Staff.login == login)) if login else None
        session.execute(update(Request).where(Request.number == number).values(assignee_id=staff_id))
    return number


def the_day(desk: Desk) -> dict[str, str]:
    """Wednesday 25 November 2026: what is overdue or due by 16:00 at the 14:00 digest."""
    return {
        "late_op1": request_for(desk, "sidorov", "Перепривязка ключа", "Как выполнить перепривязку?",
                                msk(2026, 11, 25, 10, 0)),  # due 10:20: overdue
        "soon_op3": request_for(desk, "kozlov", "Сбой АРМ", "АРМ не запускается, критический сбой.",
                                msk(2026, 11, 25, 12, 30)),  # due 14:30: soon
        "soon_op2": request_for(desk, "petrova", "Нужен патч", "Пришлите патч 2.4.1.",
                                msk(2026, 11, 25, 13, 50)),  # due 14:30: soon
        "nobody": request_for(desk, None, "Настройка опроса", "Как настроить опрос?",
                              msk(2026, 11, 25, 11, 0)),  # due 11:20: overdue, unassigned
        "later": request_for(desk, "sidorov", "Вопрос по отчётам", "Как выгрузить отчёт?",
                             msk(2026, 11, 25, 13, 55)),  # due 14:15: soon
    }


def digests(desk: Desk) -> dict[str, Received]:
    found = {}
    for mail in desk.new_mail():
        if "Сроки техподдержки" in mail.parsed()["Subject"]:
            (to,) = mail.rcpt_tos
            found[to] = mail
    return found


def text_of(mail: Received) -> str:
    return mail.parsed().get_body(("plain",)).get_content()


def html_of(mail: Received) -> str:
    return mail.parsed().get_body(("html",)).get_content()


def test_supervisors_get_what_their_people_have_overdue_or_due_soon_by_level_and_assignee(desk):
    teams(desk)
    day = the_day(desk)
    tick(desk, msk(2026, 11, 25, 14, 0))
    sent = digests(desk)
    assert set(sent) == {BOSS, CHIEF, BOSS2, HEADS}  # lonely's people have nothing: no digest

    boss = text_of(sent[BOSS])
    assert sent[BOSS].parsed()["Subject"] == \
        "Сроки техподдержки на 25.11.2026 14:00: просрочено 1, скоро срок 2"
    for number in (day["late_op1"], day["soon_op3"], day["later"]):
        assert number in boss
    assert day["soon_op2"] not in boss and day["nobody"] not in boss
    # grouped by level, then by assignee; Moscow time; how late or how long is left
    assert boss.index("=== ОП1 ===") < boss.index("Sidorov Сотрудник (sidorov)") \
        < boss.index("=== ОП3 ===") < boss.index("Kozlov Сотрудник (kozlov)")
    assert f"{day['late_op1']}  нет реакции" in boss
    assert "срок 25.11.2026 10:20, просрочено на 3 ч 40 мин" in boss
    assert "срок 25.11.2026 14:30, осталось 30 мин" in boss

    assert text_of(sent[CHIEF]).count("ТП-2026-") == 3  # boss's people, through boss
    assert day["soon_op2"] in text_of(sent[BOSS2]) and day["late_op1"] not in text_of(sent[BOSS2])
    heads = text_of(sent[HEADS])
    assert all(number in heads for number in day.values())
    assert "не назначен (группа ТП1)" in heads

    html = html_of(sent[BOSS])  # the same digest as HTML, escaped, in tables
    assert html.count('<tr class="overdue"') == 1 and html.count('<tr class="soon"') == 2
    assert "ООО «Завод»" in html and "<h2" in html


def test_a_digest_goes_once_per_slot_and_only_on_working_days(desk):
    teams(desk)
    the_day(desk)
    assert tick(desk, msk(2026, 11, 25, 14, 0)).digests == 4
    assert tick(desk, msk(2026, 11, 25, 14, 1)).digests is None  # the slot is taken care of
    assert digests(desk).keys() == {BOSS, CHIEF, BOSS2, HEADS}
    assert tick(desk, msk(2026, 11, 25, 18, 30)).digests is None
    assert tick(desk, msk(2026, 11, 26, 9, 0)).digests == 4  # Thursday morning
    assert tick(desk, msk(2026, 11, 28, 9, 0)).digests is None  # Saturday
    assert digests(desk).keys() == {BOSS, CHIEF, BOSS2, HEADS}
    with desk.sessions() as session:
        assert [(row.slot, row.mails) for row in session.scalars(
            select(SlaDigest).order_by(SlaDigest.slot))] == [
            (msk(2026, 11, 25, 14, 0), 4), (msk(2026, 11, 26, 9, 0), 4)]


def test_no_digest_on_a_public_holiday(desk):
    teams(desk)
    request_for(desk, "sidorov", "Вопрос", "Как выполнить привязку?", msk(2026, 11, 3, 17, 0))
    assert tick(desk, msk(2026, 11, 4, 9, 0)).digests is None  # Unity Day
    assert tick(desk, msk(2026, 11, 5, 9, 0)).digests == 3


def test_an_empty_digest_is_not_sent(desk):
    teams(desk)
    request_for(desk, "sidorov", "Вопрос", "Как выполнить привязку?", msk(2026, 11, 25, 10, 0))
    desk.clock.set(msk(2026, 11, 25, 10, 5))
    with desk.sessions.begin() as session:  # answered: nothing is running
        session.execute(update(Request).values(waiting_since=None, status="awaiting_customer"))
    assert tick(desk, msk(2026, 11, 25, 14, 0)).digests == 0
    assert digests(desk) == {}


def test_a_digest_lists_at_most_digest_max_items_the_most_overdue_first(desk):
    teams(desk, digest_max_items=2)
    day = the_day(desk)
    tick(desk, msk(2026, 11, 25, 14, 0))
    heads = text_of(digests(desk)[HEADS])
    assert day["late_op1"] in heads and day["nobody"] in heads and day["soon_op3"] not in heads
    assert "Ещё 3 — не показаны" in heads


def test_other_clocks_appear_in_the_digest(desk):
    """A solution the customer has not confirmed for two working days is listed with its clock."""
    teams(desk)
    number = request_for(desk, "kozlov", "Сбой АРМ", "АРМ не запускается, критический сбой.",
                         msk(2026, 11, 23, 10, 0))
    desk.clock.set(msk(2026, 11, 23, 10, 30))
    desk.write("kozlov@tecon.example", f"Re: [{number}] Сбой АРМ", "#решено\nПереустановите драйвер.")
    desk.run()
    tick(desk, msk(2026, 11, 25, 14, 0))
    boss = text_of(digests(desk)[BOSS])
    assert f"{number}  решение не подтверждено клиентом" in boss


# ---------------------------------------------------------------- in a real browser

@pytest.fixture
def browser():
    """Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mailbot-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=900,1400",
                 "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_the_digest_looks_right_in_a_real_browser(desk, browser, tmp_path):
    """The HTML part as a mail client shows it: headless Chromium renders it, the screenshot
    (test-artifacts/sla/sla_digest.png) shows the tables with their rows where the page has them."""
    from selenium.webdriver.common.by import By

    teams(desk)
    day = the_day(desk)
    tick(desk, msk(2026, 11, 25, 14, 0))
    page = tmp_path / "digest.html"
    page.write_text(html_of(digests(desk)[HEADS]), encoding="utf-8")
    browser.get(page.as_uri())

    tables = browser.find_elements(By.CSS_SELECTOR, "table.items")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.items tr.overdue, table.items tr.soon")
    assert len(tables) == 4 and len(rows) == 5  # ОП1: sidorov, nobody; ОП2: petrova; ОП3: kozlov
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 900
    assert browser.execute_script(  # no cell's text runs out of its cell
        "return [...document.querySelectorAll('td')].every(td => td.scrollWidth <= td.clientWidth)")
    for number in day.values():
        assert browser.find_element(By.XPATH, f"//td[normalize-space()='{number}']").is_displayed()
    overdue = browser.find_element(By.CSS_SELECTOR, "tr.overdue td:nth-child(3)")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(900, height + 200)  # the whole digest in one screenshot

    png = browser.get_screenshot_as_png()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "sla_digest.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= 800 and image.height >= height
    assert len(image.getcolors(1 << 24)) > 50  # text and colours, not a blank page
    box = overdue.rect  # an overdue row's cell: the screenshot has its pink there
    centre = (int(box["x"] + 4), int(box["y"] + box["height"] / 2))
    assert image.getpixel(centre) == (254, 242, 242)
    heading = browser.find_element(By.TAG_NAME, "h1").rect
    assert heading["y"] < box["y"] and image.getpixel((5, 5)) == (243, 244, 246)
