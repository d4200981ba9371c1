"""``mailbot check``: is the config usable, and can we reach the database, IMAP and SMTP?"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiosmtplib

from ..config import Config, ImapConfig, OAuth2Config
from ..register import db
from ..register.connection import database_url
from ..supervision import one_line
from ..transport import oauth


def run_checks(config: Config, say: Callable[[str], None]) -> bool:
    """Say one line per check; True when all passed."""
    results = [_check_database(config, say)]
    if config.embedded_mail:
        say("mail: no imap.host configured; `mailbot run` starts the embedded development server")
    else:
        have_token = _check_oauth2(config, say)
        results.append(have_token)
        results += [_check_imap(account, say, role, config.oauth2, have_token)
                    for role, account in config.imap.mailboxes()]
        results.append(_check_smtp(config, say, have_token))
    state, line = staff_authentication(config)
    say(line)
    # with a real mail server, staff mail that cannot be authenticated is a failed check
    results.append(state == "ok" or config.embedded_mail)
    return all(results)


def staff_authentication(config: Config) -> tuple[str, str]:
    """How staff mail is authenticated: ``ok``, ``insecure`` or ``missing``, and one line saying
    so (and, when not ok, exactly what to set). ``mailbot check`` says it; ``mailbot run`` logs it."""
    staff = config.staff
    dev = (" With the development mail server, which writes no Authentication-Results, "
           "`make run` sets MAILBOT_STAFF_AUTHENTICATION=none." if config.embedded_mail else "")
    if staff.authentication == "none":
        return "insecure", (
            'staff authentication: INSECURE: staff.authentication = "none": From: alone identifies '
            "staff, so anyone who writes a staff address into From: can run commands and answer "
            "customers as staff. For the development mail server only; for real mail set "
            'staff.authentication = "dmarc" and staff.trusted_authserv_id.')
    if not staff.trusted_authserv_id and not staff.trusted_relays:
        return "missing", (
            "staff authentication: NOT CONFIGURED: no staff mail is acted on (each is kept as a "
            "note and ТП1 is told). Set staff.trusted_authserv_id to the authserv-id your receiving "
            "server writes into Authentication-Results (e.g. MAILBOT_STAFF_TRUSTED_AUTHSERV_ID="
            "mx.example.ru) and staff.internal_hosts to the hosts that pass the mail on to the "
            "mailbox after it (see docs/operations.md, Security model)." + dev)
    parts = [f"Authentication-Results from {', '.join(staff.trusted_authserv_id) or '-'}"]
    if staff.internal_hosts:
        parts.append(f"internal hosts {', '.join(staff.internal_hosts)}")
    if staff.trusted_relays:
        parts.append(f"every mail through the relays {', '.join(staff.trusted_relays)}")
    return "ok", f"staff authentication: ok (DMARC-aligned {'; '.join(parts)})"


def _check_database(config: Config, say: Callable[[str], None]) -> bool:
    try:
        engine = db.make_engine(database_url(config))
        version = db.check_connection(engine)
        schema = db.current_version(engine)
    except Exception as exc:  # one line per failure is the whole point of `check`
        say(f"database: FAILED: {exc}")
        return False
    state = "no schema yet (run `mailbot db init`)" if schema is None else f"schema version {schema}"
    say(f"database: ok (PostgreSQL {version}, {state})")
    return True


def _check_oauth2(config: Config, say: Callable[[str], None]) -> bool:
    """Fetch a token for every account that logs in by OAuth2; whether each got one."""
    accounts = {role: account.refresh_token for role, account in config.imap.mailboxes()
                if account.auth == "oauth2"}
    if config.smtp.auth == "oauth2":
        accounts.setdefault("support", "")
    got = True
    for role, refresh_token in accounts.items():
        name = "oauth2" if role == "support" else f"oauth2 ({role})"
        source = oauth.token_source(config.oauth2, refresh_token)
        try:
            source.token()
        except oauth.TokenError as exc:
            say(f"{name}: FAILED: no access token: {exc}")
            got = False
            continue
        expires = source.expires_at()
        say(f"{name}: ok (a {config.oauth2.provider} token from {source.endpoint}, "
            f"{config.oauth2.grant} grant, {config.oauth2.mechanism}, expires {expires:%H:%M:%S} UTC)")
    return got


def _check_imap(imap: ImapConfig, say: Callable[[str], None], role: str = "support",
                oauth2: OAuth2Config | None = None, have_token: bool = True) -> bool:
    from ..transport.imap import NETWORK_ERRORS, connect

    name = "imap" if role == "support" else f"imap ({role})"
    if imap.auth == "oauth2" and not have_token:
        say(f"{name}: not tried: no OAuth2 token (see the oauth2 line)")
        return False
    try:
        client = connect(imap, oauth2)
        try:
            missing = [f for f in imap.folders if not client.folder_exists(f)]
            idle = client.has_capability("IDLE")
        finally:
            client.logout()
    except (*NETWORK_ERRORS, oauth.AuthRefused, oauth.TokenError) as exc:
        say(f"{name}: FAILED: {imap.username}@{imap.host}:{imap.port}: {one_line(exc)}")
        return False
    if missing:
        say(f"{name}: FAILED: folders not found: {', '.join(missing)}")
        return False
    login = f", {oauth2.mechanism if oauth2 else ''} login" if imap.auth == "oauth2" else ""
    say(f"{name}: ok ({imap.username}@{imap.host}:{imap.port}{login}, "
        f"IDLE {'yes' if idle else 'no: polling'})")
    return True


def _check_smtp(config: Config, say: Callable[[str], None], have_token: bool = True) -> bool:
    from ..transport.smtp import authenticate, client

    smtp = config.smtp
    if smtp.auth == "oauth2" and not have_token:
        say("smtp: not tried: no OAuth2 token (see the oauth2 line)")
        return False

    async def log_in() -> str:
        connection = client(smtp)
        await connection.connect()
        try:
            await authenticate(connection, smtp, config.oauth2)
            return (await connection.ehlo()).message.splitlines()[0]
        finally:
            connection.close()

    try:
        greeting = asyncio.run(log_in())
    except (aiosmtplib.SMTPException, OSError, oauth.AuthRefused, oauth.TokenError) as exc:
        say(f"smtp: FAILED: {smtp.host}:{smtp.port}: {one_line(exc)}")
        return False
    login = (f", {config.oauth2.mechanism} login" if smtp.auth == "oauth2"
             else ", logged in" if smtp.username else "")
    say(f"smtp: ok ({smtp.host}:{smtp.port}: {greeting}{login})")
    return True
