"""One config loader: TOML plus MAILBOT_* overrides; errors name the key in one line."""
from __future__ import annotations

import pytest

from mailbot.config import ConfigError, load_config


def write(tmp_path, text: str):
    path = tmp_path / "mailbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_embedded_defaults():
    config = load_config(None, environ={})
    assert config.database.url == ""
    assert config.embedded_mail
    assert config.imap.folders == ("INBOX",)


def test_file_values_and_environment_overrides(tmp_path):
    path = write(tmp_path, """
[database]
url = "postgresql://file/db"
[imap]
host = "imap.example.test"
port = 143
ssl = false
folders = ["INBOX", "ТП2"]
""")
    env = {"MAILBOT_DATABASE_URL": "postgresql://env/db", "MAILBOT_IMAP_PORT": "10143",
           "MAILBOT_IMAP_IDLE": "no"}
    config = load_config(path, environ=env)
    assert config.database.url == "postgresql://env/db"
    assert config.imap.host == "imap.example.test"
    assert config.imap.port == 10143
    assert config.imap.idle is False
    assert config.imap.folders == ("INBOX", "ТП2")


def test_password_from_file(tmp_path):
    secret = tmp_path / "imap.pass"
    secret.write_text("s3cret\n")
    path = write(tmp_path, f'[imap]\npassword_file = "{secret}"\n')
    assert load_config(path, environ={}).imap.password == "s3cret"
    assert load_config(None, environ={"MAILBOT_SMTP_PASSWORD_FILE": str(secret)}).smtp.password == "s3cret"


@pytest.mark.parametrize("text, key", [
    ('[imap]\nport = "abc"\n', "imap.port"),
    ('[imap]\nssl = "maybe"\n', "imap.ssl"),
    ('[imap]\nhots = "x"\n', "imap.hots"),
    ('[smtp]\nport = -1\n', "smtp.port"),
    ('[nonsense]\n', "nonsense"),
    ('imap = 3\n', "imap"),
    ('log_level = "LOUD"\n', "log_level"),
    ('timezone = "Mars/Olympus"\n', "timezone"),
    ('[sla]\ncalendar = "lunar"\n', "sla.calendar"),
    ('[staff]\nauthentication = "maybe"\n', "staff.authentication"),
    ('[staff]\ntrusted_relays = ["10.1.1.7"]\n', "staff.trusted_relays"),
    ('[staff]\ninternal_hosts = ["mx.example.ru; rm -rf"]\n', "staff.internal_hosts"),
    ('[web]\nbase_url = "javascript:alert(1)"\n', "web.base_url"),
    ('[web]\nport = 70000\n', "web.port"),
    ('[web]\nhost = "a b"\n', "web.host"),
    ('[web]\nlink_minutes = 0\n', "web.link_minutes"),
    ('[web]\nlogin_limit_per_address = 0\n', "web.login_limit_per_address"),
    ('[monitoring]\nport = 0\n', "monitoring.port"),
    ('[monitoring]\nstuck_minutes = 0\n', "monitoring.stuck_minutes"),
    ('[smtp]\nconnections = 0\n', "smtp.connections"),
    ('[smtp]\nconnections = 100\n', "smtp.connections"),
    ('[smtp]\nauth = "magic"\n', "smtp.auth"),
])
def test_a_wrong_value_is_one_line_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    message = str(err.value)
    assert key in message and "\n" not in message


def test_the_board_links_to_its_listen_address_unless_told_its_public_one():
    assert load_config(None, environ={}).web.public_url == "http://127.0.0.1:8470"
    config = load_config(None, environ={"MAILBOT_WEB_BASE_URL": "https://board.example.ru/"})
    assert config.web.public_url == "https://board.example.ru"
    assert load_config(None, environ={"MAILBOT_WEB_HOST": "::1"}).web.public_url == "http://[::1]:8470"


def test_missing_or_broken_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[imap\n"), environ={})


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    from mailbot.cli.main import EX_CONFIG, main

    code = main(["--config", str(write(tmp_path, '[imap]\nport = "x"\n')), "check"])
    err = capsys.readouterr().err
    assert code == EX_CONFIG
    assert err.strip().count("\n") == 0 and "imap.port" in err and "Traceback" not in err


def test_staff_authentication_is_dmarc_by_default_and_lists_take_a_string_too(tmp_path):
    """Secure by default; trusted_authserv_id may be one id (as before) or several."""
    assert load_config(None, environ={}).staff.authentication == "dmarc"
    path = write(tmp_path, '[staff]\ntrusted_authserv_id = "MX.example.ru"\n'
                           'internal_hosts = ["imap.example.ru", "10.0.0.0/24"]\n')
    staff = load_config(path, environ={"MAILBOT_STAFF_TRUSTED_RELAYS": "10.1.1.7, exch.example.ru"}).staff
    assert staff.trusted_authserv_id == ("mx.example.ru",)
    assert staff.internal_hosts == ("imap.example.ru", "10.0.0.0/24")
    assert staff.trusted_relays == ("10.1.1.7", "exch.example.ru")
