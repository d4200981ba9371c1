"""``mailbot check``: is the config usable, and can we reach the database, IMAP and SMTP?"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiosmtplib

from . import db
from .config import Config


def run_checks(config: Config, say: Callable[[str], None]) -> bool:
    """Say one line per check; True when all passed."""
    results = [_check_database(config, say)]
    if config.embedded_mail:
        say("mail: no imap.host configured; `mailbot run` starts the embedded development server")
    else:
        results += [_check_imap(config, say), _check_smtp(config, say)]
    return all(results)


def _check_database(config: Config, say: Callable[[str], None]) -> bool:
    try:
        engine = db.make_engine(db.database_url(config))
        version = db.check_connection(engine)
        schema = db.current_version(engine)
    except Exception as exc:  # one line per failure is the whole point of `check`
        say(f"database: FAILED: {exc}")
        return False
    state = "no schema yet (run `mailbot db init`)" if schema is None else f"schema version {schema}"
    say(f"database: ok (PostgreSQL {version}, {state})")
    return True


def _check_imap(config: Config, say: Callable[[str], None]) -> bool:
    from .transport.imap import NETWORK_ERRORS, connect

    imap = config.imap
    try:
        client = connect(imap)
        try:
            missing = [f for f in imap.folders if not client.folder_exists(f)]
            idle = client.has_capability("IDLE")
        finally:
            client.logout()
    except NETWORK_ERRORS as exc:
        say(f"imap: FAILED: {imap.username}@{imap.host}:{imap.port}: {exc}")
        return False
    if missing:
        say(f"imap: FAILED: folders not found: {', '.join(missing)}")
        return False
    say(f"imap: ok ({imap.username}@{imap.host}:{imap.port}, IDLE {'yes' if idle else 'no: polling'})")
    return True


def _check_smtp(config: Config, say: Callable[[str], None]) -> bool:
    smtp = config.smtp

    async def ehlo() -> str:
        client = aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port, use_tls=smtp.ssl,
                                 start_tls=smtp.starttls or None, timeout=smtp.timeout)
        await client.connect()
        try:
            if smtp.username:
                await client.login(smtp.username, smtp.password)
            return (await client.ehlo()).message.splitlines()[0]
        finally:
            client.close()

    try:
        greeting = asyncio.run(ehlo())
    except (aiosmtplib.SMTPException, OSError) as exc:
        say(f"smtp: FAILED: {smtp.host}:{smtp.port}: {exc}")
        return False
    say(f"smtp: ok ({smtp.host}:{smtp.port}: {greeting})")
    return True
