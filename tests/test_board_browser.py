"""The board in a real browser: headless Chromium from Debian driven by Selenium, against a real
`mailbot run` (Dovecot, PostgreSQL, the SMTP sink). A supervisor logs in by the link the bot
mails him, filters the register, opens a request, downloads its attachment and sees the
overdue one highlighted. Screenshots are kept in test-artifacts/board/ (git-ignored).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.boardsite import LINK, Daemon, add_staff, wait_until
from tests.mailflow import body

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "board"
SUPERVISOR = "boss@tecon.example"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile, downloads = tempfile.mkdtemp(prefix="chromium-"), tempfile.mkdtemp(prefix="downloads-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,900",
                 "--lang=ru"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": downloads})
    driver.downloads = Path(downloads)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_for(driver, css: str, timeout: float = 10.0):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(seen.presence_of_element_located((By.CSS_SELECTOR, css)))


def rows(driver, table: str = "#register") -> dict[str, str]:
    """The rows of a register table: number -> its CSS class, read in one script (rows found one
    call and read the next go stale when a filter reloads the page in between)."""
    return dict(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " row => [row.getAttribute('data-number'), row.getAttribute('class') || ''])",
        f"{table} tbody tr[data-number]"))


def test_a_supervisor_logs_in_by_mail_filters_opens_a_request_and_downloads_its_file(
        desk, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    add_staff(desk, "boss")
    add_staff(desk, "ivanov", supervisor="boss")
    daemon = Daemon(desk, tmp_path).start()
    try:
        desk.write("ivanov@zavod.example", "Не запускается АРМ диспетчера",
                   "После обновления АРМ не запускается. Лог во вложении.",
                   attachments=(("лог АРМ.txt", "ошибка 0x42\n".encode()),))
        desk.write("ivanov@zavod.example", "Как перепривязать ключ",
                   "Подскажите, как выполнить перепривязку ключа?")
        wait_until(lambda: _count(desk, "SELECT count(*) FROM requests") == 2, 20, "two requests")
        first, second = (n for n, in _rows(desk, "SELECT number FROM requests ORDER BY id"))
        with desk.sessions.begin() as session:  # the first one's reaction deadline has passed
            session.execute(text("UPDATE requests SET due_at = now() - interval '1 hour', "
                                 "level = 3 WHERE number = :n"), {"n": first})
            session.execute(text("UPDATE requests SET level = 1, due_at = now() + interval '1 day' "
                                 "WHERE number = :n"), {"n": second})  # not due soon, whatever the hour

        # anonymous: the log-in page; the link comes by mail
        browser.get(daemon.board + "/requests")
        wait_for(browser, "#email").send_keys(SUPERVISOR)
        shot(browser, "01-login")
        browser.find_element(By.ID, "send").click()
        wait_for(browser, "#sent")
        links = lambda: [LINK.search(body(m)) for m in desk.sink.messages  # noqa: E731
                         if SUPERVISOR in m.rcpt_tos and LINK.search(body(m))]
        wait_until(links, 20, "the login mail")
        browser.get(links()[0][1])
        wait_for(browser, "#enter").click()

        # the register: the overdue request highlighted
        wait_for(browser, "#register")
        assert browser.current_url == daemon.board + "/requests"
        assert rows(browser) == {first: "overdue", second: ""}
        late = browser.find_element(By.CSS_SELECTOR, f'tr[data-number="{first}"] td')
        assert late.value_of_css_property("background-color") == "rgba(253, 226, 225, 1)"
        shot(browser, "02-register")

        # filters
        Select(browser.find_element(By.ID, "level")).select_by_visible_text("ОП1")
        browser.find_element(By.ID, "apply").click()
        wait_until(lambda: rows(browser) == {second: ""}, 10, "the ОП1 filter")
        Select(browser.find_element(By.ID, "level")).select_by_visible_text("любой")
        browser.find_element(By.ID, "q").send_keys("арм диспетчера")
        browser.find_element(By.ID, "apply").click()
        wait_until(lambda: set(rows(browser)) == {first}, 10, "the text filter")

        # the request: timeline, mail, the file
        browser.find_element(By.LINK_TEXT, first).click()
        wait_for(browser, "#timeline")
        assert "overdue" in browser.find_element(By.ID, "card").get_attribute("class")
        assert "После обновления АРМ не запускается" in browser.page_source
        shot(browser, "03-request")
        browser.find_element(By.PARTIAL_LINK_TEXT, "лог АРМ").click()
        target = browser.downloads / "лог АРМ.txt"
        wait_until(target.exists, 10, "the download")
        assert target.read_bytes() == "ошибка 0x42\n".encode()

        # the SLA board
        browser.find_element(By.LINK_TEXT, "SLA").click()
        wait_for(browser, "#urgent")
        assert rows(browser, "#urgent") == {first: "overdue"}
        shot(browser, "04-sla")

        browser.find_element(By.CSS_SELECTOR, "form.who button").click()
        wait_for(browser, "#email")
        browser.get(daemon.board + "/sla")
        wait_for(browser, "#email")  # logged out: back to the log-in page
    finally:
        assert daemon.stop() == 0


def _rows(desk, sql: str) -> list:
    with desk.sessions() as session:
        return session.execute(text(sql)).all()


def _count(desk, sql: str) -> int:
    return _rows(desk, sql)[0][0]
