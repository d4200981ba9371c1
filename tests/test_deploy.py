"""The install as an operator does it (issue 19): the hardened systemd unit, its system user,
and the Postfix pipe run exactly as Postfix runs it, with the exit-code contract the MTA
relies on (0 stored, 75 retry later, 65 not a mail)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.cli.main import EX_CONFIG, EX_DATAERR, EX_OK, EX_TEMPFAIL, EX_USAGE, build_parser
from mailbot.register import db
from mailbot.register.models import Inbound

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
INSTALLED_MAILBOT = "/opt/mailbot/.venv/bin/mailbot"
INSTALLED_CONFIG = "/etc/mailbot/mailbot.toml"


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values, in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return unit_settings(DEPLOY / "mailbot.service")["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    assert key in service, f"{key}= missing from mailbot.service"
    return service[key][-1]


# ---------------------------------------------------------------- the systemd unit

def test_the_unit_runs_as_the_dedicated_user_that_sysusers_creates(service):
    assert one(service, "User") == "mailbot" and one(service, "Group") == "mailbot"
    entries = [line.split() for line in (DEPLOY / "sysusers.d" / "mailbot.conf").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert entries[0][:3] == ["u", "mailbot", "-"]
    assert "/usr/sbin/nologin" in entries[0]


def test_the_unit_can_write_only_its_state_and_log_directories(service):
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "ProtectHome") == "yes"
    assert one(service, "PrivateTmp") == "yes"
    assert one(service, "NoNewPrivileges") == "yes"
    assert one(service, "StateDirectory") == "mailbot"
    assert one(service, "LogsDirectory") == "mailbot"
    assert set(one(service, "ReadWritePaths").split()) == {"/var/lib/mailbot", "/var/log/mailbot"}
    # the sample config keeps its local state where the unit lets it write
    sample = tomllib.loads((DEPLOY / "mailbot.example.toml").read_text(encoding="utf-8"))
    assert sample["state_dir"] == "/var/lib/mailbot"


def test_the_unit_reaches_only_inet_and_unix_sockets(service):
    assert set(one(service, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert one(service, "CapabilityBoundingSet") == ""


def test_the_unit_restarts_on_failure_but_not_for_a_wrong_config_or_command_line(service):
    """`mailbot run` exits 75 without its database (restart, forever) and 78 for a config
    error, 64 (or argparse's 2) for a wrong command line: those need a person."""
    assert one(service, "Restart") == "on-failure"
    prevented = {int(code) for code in one(service, "RestartPreventExitStatus").split()}
    assert prevented == {2, EX_USAGE, EX_CONFIG}
    assert EX_TEMPFAIL not in prevented
    unit = unit_settings(DEPLOY / "mailbot.service")["Unit"]
    assert unit["StartLimitIntervalSec"] == ["0"]


def test_the_unit_runs_commands_the_cli_has(service):
    """ExecStartPre upgrades the schema, ExecStart runs the daemon, both on the config the
    Postfix pipe uses."""
    parser = build_parser()
    for key in ("ExecStartPre", "ExecStart"):
        argv = shlex.split(one(service, key))
        assert argv[0] == INSTALLED_MAILBOT
        parser.parse_args(argv[1:])  # exits 2 on an unknown command
    assert shlex.split(one(service, "ExecStartPre"))[1:] == ["db", "upgrade"]
    assert f"MAILBOT_CONFIG={INSTALLED_CONFIG}" in service["Environment"]


def test_systemd_accepts_the_unit(tmp_path):
    """`systemd-analyze verify`, with the code where this checkout has it."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    mailbot = Path(sys.executable).with_name("mailbot")
    unit = tmp_path / "mailbot.service"
    unit.write_text((DEPLOY / "mailbot.service").read_text().replace(INSTALLED_MAILBOT, str(mailbot)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if "mailbot.service" in line]
    assert done.returncode == 0 and not problems, done.stderr


# ---------------------------------------------------------------- the Postfix pipe

def pipe_services() -> dict[str, dict[str, object]]:
    """The pipe services of deploy/postfix/master.cf: name -> user, flags, argv."""
    services: dict[str, dict[str, object]] = {}
    text = re.sub(r"\n[ \t]+", " ", (DEPLOY / "postfix" / "master.cf").read_text())
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split()
        if fields[7] != "pipe":
            continue
        options = " ".join(fields[8:])
        argv = shlex.split(options.split("argv=", 1)[1])
        settings = dict(f.split("=", 1) for f in shlex.split(options.split("argv=", 1)[0]))
        services[fields[0]] = {"user": settings.get("user"), "flags": settings.get("flags", ""),
                               "argv": argv}
    return services


def test_every_routed_address_has_a_pipe_service_of_its_role():
    services = pipe_services()
    routes = dict(line.split() for line in (DEPLOY / "postfix" / "transport").read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    assert routes == {"support@example.ru": "mailbot:", "tp2@example.ru": "mailbot-tp2:"}
    for service in routes.values():
        assert service.rstrip(":") in services
    assert services["mailbot"]["user"] == "mailbot"
    assert services["mailbot-tp2"]["argv"][-2:] == ["--mailbox", "tp2"]


def postfix_delivers(service: str, message: bytes, config: Path, cwd: Path) -> subprocess.CompletedProcess:
    """What Postfix's pipe(8) does for one recipient: run the service's argv (the installed
    paths replaced by this checkout's) in its minimal environment, the message on stdin with
    the ``Return-Path:`` line of ``flags=R`` and LF line ends."""
    spec = pipe_services()[service]
    argv = [str(Path(sys.executable).with_name("mailbot")) if a == INSTALLED_MAILBOT
            else str(config) if a == INSTALLED_CONFIG else a for a in spec["argv"]]
    stdin = message.replace(b"\r\n", b"\n")
    if "R" in str(spec["flags"]):
        stdin = b"Return-Path: <ivanov@zavod.example>\n" + stdin
    return subprocess.run(argv, input=stdin, capture_output=True, cwd=cwd, timeout=60,
                          env={"LANG": "C", "MAIL_CONFIG": "/etc/postfix"})


def pipe_config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "mailbot.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    return path


MAIL = ("From: Иванов <ivanov@zavod.example>\r\nTo: support@example.ru\r\n"
        "Subject: =?utf-8?b?0J3QtSDQt9Cw0L/Rg9GB0LrQsNC10YLRgdGPINCQ0KDQnA==?=\r\n"
        "Message-ID: <pipe-{n}@zavod.example>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nПосле обновления система не запускается.\r\n")


def test_the_postfix_pipe_stores_mail_and_exits_0_also_on_a_retry(tmp_path, database_url):
    db.init_schema(db.make_engine(database_url))
    config, cwd = pipe_config(tmp_path, database_url), tmp_path / "queue"
    cwd.mkdir()
    for service, n in (("mailbot", 1), ("mailbot", 1), ("mailbot-tp2", 2)):
        done = postfix_delivers(service, MAIL.format(n=n).encode(), config, cwd)
        assert done.returncode == EX_OK, done.stderr
    with db.make_sessionmaker(db.make_engine(database_url))() as session:
        stored = session.execute(select(Inbound.mailbox, Inbound.raw).order_by(Inbound.id)).all()
    assert [mailbox for mailbox, _ in stored] == ["support", "tp2"]  # the retry stored nothing
    assert stored[0].raw.startswith(b"Return-Path: <ivanov@zavod.example>\n")
    assert "Иванов".encode() in stored[0].raw
    assert list(cwd.iterdir()) == []  # nothing written where Postfix runs it


def test_the_postfix_pipe_exits_75_while_the_database_is_down_so_postfix_retries(tmp_path):
    config = pipe_config(tmp_path, "postgresql://mailbot@127.0.0.1:1/mailbot")
    done = postfix_delivers("mailbot", MAIL.format(n=3).encode(), config, tmp_path)
    assert done.returncode == EX_TEMPFAIL
    assert b"Traceback" not in done.stderr
    assert b"the MTA should retry" in done.stderr or b"database unavailable" in done.stderr


def test_garbage_through_the_postfix_pipe_is_kept_not_bounced(tmp_path, database_url):
    """The Return-Path line of ``flags=R`` makes any input a header block: it is stored (the
    processor then quarantines what it cannot read) and Postfix bounces nothing. Without
    the line, as a direct call would give it, such input exits 65 (EX_DATAERR)."""
    db.init_schema(db.make_engine(database_url))
    config = pipe_config(tmp_path, database_url)
    done = postfix_delivers("mailbot", b"\x00\x01 garbage", config, tmp_path)
    assert done.returncode == EX_OK, done.stderr
    argv = [str(Path(sys.executable).with_name("mailbot")), "--config", str(config), "ingest"]
    direct = subprocess.run(argv, input=b"\x00\x01 garbage", capture_output=True, timeout=60,
                            env={"LANG": "C"})
    assert direct.returncode == EX_DATAERR, direct.stderr


def test_the_postfix_pipe_exits_78_for_a_broken_config(tmp_path):
    """Postfix defers on 78 too (EX_CONFIG is a temporary failure to it): nothing is bounced."""
    config = tmp_path / "mailbot.toml"
    config.write_text("[database\n")
    done = postfix_delivers("mailbot", MAIL.format(n=4).encode(), config, tmp_path)
    assert done.returncode == EX_CONFIG
    assert b"config error" in done.stderr
