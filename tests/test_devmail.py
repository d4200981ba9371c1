"""The development mail server's web mail: its websocket serves only its own page.

Browsers let any web site open a websocket to 127.0.0.1; the websocket reads and
sends the mail of every address on the server. These tests are the attack: a real
websocket client against the running server, with the Origin a browser would send.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import aiohttp
import pytest

from mailbot.config import load_config, with_overrides
from mailbot.transport.devmail import DevMailServer

from tests.servers import LOCALHOST, free_port, wait_for_port


@pytest.fixture(scope="module")
def web_port(tmp_path_factory) -> Iterator[int]:
    """A running development mail server (its mail in a temporary state directory); its web port."""
    port = free_port()
    config = replace(with_overrides(load_config(None, environ={}),
                                    dev={"imap_port": free_port(), "smtp_port": free_port(),
                                         "http_port": port}),
                     state_dir=str(tmp_path_factory.mktemp("state")))
    server = DevMailServer(config)
    server.start()
    try:
        wait_for_port(port)
        yield port
    finally:
        server.stop()


def handshake(port: int, origin: str | None) -> int | dict:
    """Open the websocket with this Origin: the server's answer to ``config``, or the HTTP
    status that refused the upgrade."""
    async def attempt() -> int | dict:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"http://{LOCALHOST}:{port}/websocket",
                                              origin=origin, timeout=aiohttp.ClientWSTimeout(5)) as ws:
                    await ws.send_json({"command": "config"})
                    return await ws.receive_json(timeout=5)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
    return asyncio.run(attempt())


def test_the_web_mail_page_itself_opens_its_websocket(web_port):
    for origin in (f"http://127.0.0.1:{web_port}", f"http://localhost:{web_port}"):
        answer = handshake(web_port, origin)
        assert isinstance(answer, dict) and answer["command"] == "config", origin


def test_another_web_site_cannot_open_the_websocket(web_port):
    for origin in ("http://evil.example", f"http://evil.example:{web_port}",
                   f"http://127.0.0.1:{web_port + 1}", f"https://127.0.0.1:{web_port}", "null"):
        assert handshake(web_port, origin) == 403, origin


def test_a_websocket_without_origin_is_refused(web_port):
    assert handshake(web_port, None) == 403


def test_the_web_mail_page_is_still_served(web_port):
    async def page() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{LOCALHOST}:{web_port}/") as response:
                return response.status, await response.text()
    status, text = asyncio.run(page())
    assert status == 200 and "<html" in text.lower()


def test_the_development_mail_survives_a_restart_with_its_uids(tmp_path):
    """Issue 16 §5: `make run` restarted keeps the walk-through's mail, and each folder keeps
    its UIDVALIDITY and UIDs, so the bot's IMAP state still fits (no UIDVALIDITY warning)."""
    import smtplib
    from email.message import EmailMessage

    from imapclient import IMAPClient

    config = replace(with_overrides(load_config(None, environ={}),
                                    dev={"imap_port": free_port(), "smtp_port": free_port(),
                                         "http_port": free_port()}), state_dir=str(tmp_path))

    def folder_state() -> tuple[int, list[int], list[bytes]]:
        with IMAPClient(LOCALHOST, config.dev.imap_port, ssl=False) as imap:
            imap.login(config.support.address, config.dev.password)
            validity = imap.select_folder("INBOX")[b"UIDVALIDITY"]
            uids = imap.search("ALL")
            flags = [f for uid, data in sorted(imap.get_flags(uids).items()) for f in data]
            return validity, uids, flags

    server = DevMailServer(config)
    server.start()
    try:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "ivanov@zavod.example", \
            config.support.address, "Не запускается АРМ"
        message.set_content("Добрый день!")
        with smtplib.SMTP(LOCALHOST, config.dev.smtp_port) as smtp:
            smtp.send_message(message)
        with IMAPClient(LOCALHOST, config.dev.imap_port, ssl=False) as imap:
            imap.login(config.support.address, config.dev.password)
            imap.select_folder("INBOX")
            imap.add_flags(imap.search("ALL"), [b"\\Seen"])
        before = folder_state()
    finally:
        server.stop()
    assert (tmp_path / "devmail" / "index.json").exists()

    again = DevMailServer(config)
    again.start()
    try:
        assert folder_state() == before and before[1] and b"\\Seen" in before[2]
    finally:
        again.stop()
