"""OAuth2 mail logins (issue 19): XOAUTH2 and OAUTHBEARER to a real Dovecot whose oauth2 passdb
asks a token introspection endpoint of the test, and to an SMTP server that checks the token;
tokens come from a local token endpoint over HTTPS, through the plain refresh-token flow or msal.
No external service is involved."""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from mailbot.cli.main import main
from mailbot.clock import FrozenClock
from mailbot.config import ConfigError, load_config, with_overrides
from mailbot.daemon import Daemon
from mailbot.register.models import Outbox
from mailbot.supervision import DatabaseHealth
from mailbot.transport import oauth
from mailbot.transport.imap import FolderSync, ImapWatcher, connect
from tests.mailflow import Desk
from tests.servers import OAuthSmtpSink

CUSTOMER = "ivanov@zavod.example"
# the test SMTP server takes OAuth2 logins in the clear, as the local Dovecot does
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def oauth_sink(oauth_provider):
    sink = OAuthSmtpSink(oauth_provider).start()
    yield sink
    sink.stop()


def oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink, *, provider="generic",
               grant="refresh_token", mechanism="XOAUTH2", secret="s3cret-client-key") -> Desk:
    """The bot's desk with its mailbox on the OAuth2 Dovecot and OAuth2 logins everywhere."""
    mailbox = oauth_dovecot.new_mailbox()
    desk = Desk(database_url, oauth_dovecot, mailbox, oauth_sink)
    client_id = oauth_provider.add_client(secret, mailbox=mailbox.user if grant ==
                                          "client_credentials" else "")
    settings = {"provider": provider, "grant": grant, "client_id": client_id,
                "client_secret": secret, "mechanism": mechanism, "ca_file": oauth_provider.ca_file}
    if grant == "refresh_token":
        settings["refresh_token"] = oauth_provider.grant(mailbox.user)
    if provider == "microsoft":
        settings |= {"authority": oauth_provider.authority, "tenant": "tenant-1"}
    else:
        settings["token_url"] = oauth_provider.token_url
    desk.config = with_overrides(desk.config, oauth2=settings,
                                 imap={"auth": "oauth2", "password": ""},
                                 smtp={"auth": "oauth2", "username": mailbox.user})
    return desk


def secrets_of(desk: Desk, provider) -> list[str]:
    """Everything that must never be logged: the client secret, the refresh token, and every
    access token the provider issued."""
    return [s for s in (desk.config.oauth2.client_secret, desk.config.oauth2.refresh_token,
                        *provider.issued()) if s]


# ---------------------------------------------------------------- logging in

@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_the_bot_reads_and_sends_mail_with_an_oauth2_login(database_url, oauth_dovecot,
                                                           oauth_provider, oauth_sink, mechanism):
    """A customer's mail is fetched over IMAP and answered over SMTP, both logged in with one
    access token from the refresh-token flow."""
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink, mechanism=mechanism)
    before = len(oauth_provider.requests)
    desk.write(CUSTOMER, "Не запускается АРМ", "После обновления система не запускается.")
    desk.run()
    assert "ТП-" in desk.mail_to(CUSTOMER).parsed()["Subject"]
    assert oauth_sink.logins[-1] == (mechanism, desk.mailbox.user)
    log = (oauth_dovecot.dir / "log" / "dovecot.log").read_text()
    assert f"user=<{desk.mailbox.user}>, method={mechanism}" in log
    assert len(oauth_provider.requests) - before == 1  # one token for IMAP and SMTP
    assert oauth_provider.requests[-1]["grant_type"] == "refresh_token"


def test_an_expired_token_is_refreshed_and_the_login_retried_once(database_url, oauth_dovecot,
                                                                  oauth_provider, oauth_sink):
    """The server refuses a token we still hold for good (it expired, or was revoked): one new
    token is fetched and the login tried once more, for IMAP and for SMTP."""
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink)
    desk.write(CUSTOMER, "Не запускается АРМ", "Ошибка при запуске.")
    desk.run()
    desk.new_mail()
    oauth_provider.expire_all()
    requests, refused = len(oauth_provider.requests), oauth_sink.refused
    desk.write(CUSTOMER, "Вопрос по настройке", "Как настроить привязку ключа?")
    desk.run()
    assert desk.mail_to(CUSTOMER)
    assert len(oauth_provider.requests) == requests + 1  # one refresh, shared by both
    assert oauth_sink.refused == refused  # SMTP already had the new token


def test_a_token_is_replaced_before_it_expires(oauth_provider, oauth_dovecot):
    """A token within ``refresh_margin`` of its expiry is not used: a new one is fetched first."""
    mailbox = oauth_dovecot.new_mailbox()
    config = load_config(environ={}).oauth2
    config = replace(config, client_id=oauth_provider.add_client("k"), client_secret="k",
                     refresh_token=oauth_provider.grant(mailbox.user),
                     token_url=oauth_provider.token_url, ca_file=oauth_provider.ca_file)
    clock = FrozenClock(datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc))
    source = oauth.TokenSource(config, clock=clock)
    first = source.token()
    clock.advance(seconds=3600 - 301)
    assert source.token() == first
    clock.advance(seconds=2)  # 299 s left, less than the 300 s margin
    second = source.token()
    assert second != first and source.fetched == 2
    assert oauth_provider.owner(second) == mailbox.user


def test_a_refused_fresh_token_is_a_clear_login_error_not_a_loop(database_url, oauth_dovecot,
                                                                  oauth_provider, oauth_sink):
    """A token the server refuses even when fresh (the mailbox is not the token's) gives up
    after the one retry, saying so."""
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink)
    other = replace(desk.config.imap, username=oauth_dovecot.new_mailbox().user)
    requests = len(oauth_provider.requests)
    with pytest.raises(oauth.AuthRefused, match="refused a fresh OAuth2 token"):
        connect(other, desk.config.oauth2)
    assert len(oauth_provider.requests) - requests <= 2  # at most the first token and one more


# ---------------------------------------------------------------- Microsoft 365 through msal

@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
def test_microsoft_tokens_come_through_msal(database_url, oauth_dovecot, oauth_provider,
                                            oauth_sink, grant):
    """provider = "microsoft": msal asks the authority's OpenID configuration for the token
    endpoint (here the local one: ``authority``), then gets the token by the grant."""
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink,
                      provider="microsoft", grant=grant)
    desk.write(CUSTOMER, "Не запускается АРМ", "Ошибка при запуске.")
    desk.run()
    assert desk.mail_to(CUSTOMER)
    form = oauth_provider.requests[-1]
    assert form["grant_type"] == grant
    expected = ("https://outlook.office365.com/.default" if grant == "client_credentials"
                else "https://outlook.office365.com/IMAP.AccessAsUser.All")
    assert expected in form["scope"]
    # a refused token is replaced, also when msal holds it in its own cache
    oauth_provider.expire_all()
    requests = len(oauth_provider.requests)
    connect(desk.config.imap, desk.config.oauth2).logout()
    assert len(oauth_provider.requests) == requests + 1


# ---------------------------------------------------------------- failures: clear, nothing lost

def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def revoke(desk: Desk, provider) -> None:
    provider.revoke(desk.config.oauth2.refresh_token)
    provider.expire_all()


def test_a_revoked_refresh_token_stops_intake_with_a_clear_error_and_the_mail_waits(
        database_url, oauth_dovecot, oauth_provider, oauth_sink, caplog):
    """The IMAP watcher logs an ERROR naming the token endpoint's answer and keeps trying; the
    mail stays in the mailbox and is taken once a good refresh token is configured."""
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink)
    desk.write(CUSTOMER, "Не запускается АРМ", "Ошибка при запуске.")
    revoke(desk, oauth_provider)
    stop = threading.Event()
    sync = FolderSync(desk.config.imap, "INBOX", desk.sessions, oauth2=desk.config.oauth2)
    watcher = ImapWatcher(sync, stop, DatabaseHealth())
    with caplog.at_level(logging.ERROR, logger="mailbot"):
        thread = threading.Thread(target=watcher.run)
        thread.start()
        try:
            for _ in range(100):
                if errors(caplog):
                    break
                stop.wait(0.05)
        finally:
            stop.set()
            thread.join(10)
    message = errors(caplog)[0]
    assert "cannot log in" in message and "invalid_grant" in message
    assert "the refresh token was revoked" in message and "the mail waits" in message
    with oauth_dovecot.client(desk.mailbox.user) as client:
        client.select_folder("INBOX")
        assert len(client.search("ALL")) == 1  # nothing taken, nothing lost
    new_token = oauth_provider.grant(desk.mailbox.user)
    desk.config = with_overrides(desk.config, oauth2={"refresh_token": new_token})
    desk.run()
    assert desk.mail_to(CUSTOMER)


def test_a_refused_smtp_login_keeps_the_mail_in_the_outbox(database_url, oauth_dovecot,
                                                           oauth_provider, oauth_sink, caplog):
    """The sender logs an ERROR and puts the mail off (slowly: minutes); the row stays pending."""
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink)
    desk.write(CUSTOMER, "Не запускается АРМ", "Ошибка при запуске.")
    revoke(desk, oauth_provider)
    config = with_overrides(desk.config, imap={"auth": "password",
                                               "password": desk.mailbox.password})
    with caplog.at_level(logging.ERROR, logger="mailbot"):
        asyncio.run(Daemon(config, desk.sessions, desk.clock).run_once())
    assert not oauth_sink.messages
    with desk.sessions() as session:
        rows = session.scalars(select(Outbox)).all()
    assert rows and all(r.status == "pending" for r in rows)
    assert all("cannot log in" in r.last_error and "invalid_grant" in r.last_error for r in rows)
    assert any("SMTP server" in e and "every few minutes" in e for e in errors(caplog)), errors(caplog)


def write_config(tmp_path, desk: Desk) -> str:
    """The desk's OAuth2 setup as an operator writes it: secrets in files of their own."""
    (tmp_path / "client.secret").write_text(desk.config.oauth2.client_secret + "\n")
    (tmp_path / "refresh.token").write_text(desk.config.oauth2.refresh_token + "\n")
    o, imap, smtp = desk.config.oauth2, desk.config.imap, desk.config.smtp
    path = tmp_path / "mailbot.toml"
    path.write_text(f"""
[database]
url = "{desk.config.database.url}"
[imap]
host = "{imap.host}"
port = {imap.port}
ssl = false
username = "{imap.username}"
auth = "oauth2"
[smtp]
host = "{smtp.host}"
port = {smtp.port}
username = "{smtp.username}"
auth = "oauth2"
[staff]
trusted_authserv_id = ["mx.example.test"]
[oauth2]
provider = "generic"
token_url = "{o.token_url}"
ca_file = "{o.ca_file}"
client_id = "{o.client_id}"
client_secret_file = "{tmp_path / 'client.secret'}"
refresh_token_file = "{tmp_path / 'refresh.token'}"
mechanism = "OAUTHBEARER"
""", encoding="utf-8")
    return str(path)


def test_mailbot_check_fetches_a_token_and_logs_in_to_imap_and_smtp(
        tmp_path, capsys, database_url, oauth_dovecot, oauth_provider, oauth_sink):
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink)
    assert main(["--config", write_config(tmp_path, desk), "check"]) == 0
    out = capsys.readouterr().out
    assert f"oauth2: ok (a generic token from {oauth_provider.token_url}" in out
    assert "imap: ok (" in out and "OAUTHBEARER login" in out
    assert "smtp: ok (" in out
    assert not any(secret in out for secret in secrets_of(desk, oauth_provider))


def test_mailbot_check_says_which_step_failed_and_why(tmp_path, capsys, database_url,
                                                      oauth_dovecot, oauth_provider, oauth_sink):
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink)
    config = write_config(tmp_path, desk)
    revoke(desk, oauth_provider)
    assert main(["--config", config, "check"]) == 1
    out = capsys.readouterr().out
    assert ("oauth2: FAILED: no access token: token endpoint "
            f"{oauth_provider.token_url} refused: invalid_grant: the refresh token was revoked") in out
    assert "imap: not tried: no OAuth2 token" in out and "smtp: not tried" in out
    # a token the mail server refuses: the token step passes, the login step says why
    (tmp_path / "refresh.token").write_text(oauth_provider.grant("someone-else@example.test"))
    assert main(["--config", config, "check"]) == 1
    out = capsys.readouterr().out
    assert "oauth2: ok" in out
    assert "imap: FAILED:" in out and "refused a fresh OAuth2 token" in out
    assert "smtp: FAILED:" in out and "535" in out


def test_a_token_endpoint_that_cannot_be_reached_is_named(tmp_path, oauth_provider):
    config = load_config(environ={}).oauth2
    config = replace(config, client_id="x", refresh_token="r",
                     token_url="https://127.0.0.1:9/token", timeout=5)
    with pytest.raises(oauth.TokenError, match=r"token endpoint https://127.0.0.1:9/token unreachable"):
        oauth.TokenSource(config).token()
    # a certificate we do not trust is refused, not ignored
    config = replace(config, token_url=oauth_provider.token_url, ca_file="")
    with pytest.raises(oauth.TokenError, match="CERTIFICATE_VERIFY_FAILED"):
        oauth.TokenSource(config).token()


# ---------------------------------------------------------------- tokens are never logged

def test_tokens_and_secrets_never_reach_the_log(database_url, oauth_dovecot, oauth_provider,
                                                oauth_sink, caplog, capfd):
    """Everything at DEBUG, imaplib's protocol trace included, through a login, a refused token
    and its refresh, and a revoked refresh token: no token nor secret in any line."""
    desk = oauth_desk(database_url, oauth_dovecot, oauth_provider, oauth_sink)
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        desk.write(CUSTOMER, "Не запускается АРМ", "Ошибка при запуске.")
        desk.run()
        seen += secrets_of(desk, oauth_provider)
        oauth_provider.expire_all()
        connect(desk.config.imap, desk.config.oauth2).logout()  # refused, refreshed, retried
        seen += secrets_of(desk, oauth_provider)
        revoke(desk, oauth_provider)
        with pytest.raises(oauth.TokenError):
            connect(desk.config.imap, desk.config.oauth2)
    lines = [r.getMessage() for r in caplog.records
             if not r.name.startswith("mail.log")]  # aiosmtpd: the test server's own trace
    assert any("AUTHENTICATE" in line for line in lines)  # imaplib's trace was on
    assert any("OAuth2: new access token" in line for line in lines)
    output = capfd.readouterr()
    for secret in set(seen):
        assert not [line for line in lines if secret in line], "a secret was logged"
        assert secret not in output.out + output.err
    assert "at-" not in repr(oauth.AccessToken("at-x", datetime.now(timezone.utc)))


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("environ, message", [
    ({"MAILBOT_IMAP_AUTH": "oauth"}, "imap.auth: expected 'password' or 'oauth2'"),
    ({"MAILBOT_IMAP_AUTH": "oauth2"}, "oauth2.client_id: needed"),
    ({"MAILBOT_SMTP_AUTH": "oauth2", "MAILBOT_OAUTH2_CLIENT_ID": "c"},
     "oauth2.refresh_token: needed by the refresh_token grant"),
    ({"MAILBOT_IMAP_AUTH": "oauth2", "MAILBOT_OAUTH2_CLIENT_ID": "c",
      "MAILBOT_OAUTH2_PROVIDER": "google", "MAILBOT_OAUTH2_GRANT": "client_credentials"},
     "oauth2.grant: google gives mail access by a refresh token only"),
    ({"MAILBOT_IMAP_AUTH": "oauth2", "MAILBOT_OAUTH2_CLIENT_ID": "c",
      "MAILBOT_OAUTH2_REFRESH_TOKEN": "r"}, "oauth2.token_url: needed with provider = \"generic\""),
    ({"MAILBOT_IMAP_AUTH": "oauth2", "MAILBOT_OAUTH2_CLIENT_ID": "c",
      "MAILBOT_OAUTH2_PROVIDER": "microsoft", "MAILBOT_OAUTH2_GRANT": "client_credentials",
      "MAILBOT_OAUTH2_CLIENT_SECRET": "s"}, "oauth2.tenant: needed"),
    ({"MAILBOT_OAUTH2_TOKEN_URL": "http://idp.example/token"}, "oauth2.token_url: expected an https:// URL"),
    ({"MAILBOT_OAUTH2_MECHANISM": "PLAIN"}, "oauth2.mechanism: expected one of XOAUTH2, OAUTHBEARER"),
])
def test_oauth2_config_errors_name_the_key(environ, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(environ={"MAILBOT_IMAP_HOST": "imap.example.ru", **environ})


def test_google_and_yandex_need_only_a_client_and_a_refresh_token():
    for provider, url in (("google", "https://oauth2.googleapis.com/token"),
                          ("yandex", "https://oauth.yandex.ru/token")):
        config = load_config(environ={"MAILBOT_IMAP_HOST": "imap.example.ru",
                                      "MAILBOT_IMAP_AUTH": "oauth2", "MAILBOT_OAUTH2_CLIENT_ID": "c",
                                      "MAILBOT_OAUTH2_PROVIDER": provider,
                                      "MAILBOT_OAUTH2_REFRESH_TOKEN": "r"})
        assert oauth.TokenSource(config.oauth2).endpoint == url
