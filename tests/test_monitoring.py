"""/metrics, /healthz and /readyz: what operators and Prometheus see."""
from __future__ import annotations

import asyncio
import re
import threading
from datetime import timedelta

import httpx
import pytest
from prometheus_client import REGISTRY

from mailbot.config import with_overrides
from mailbot.register import db
from mailbot.register.models import Inbound, Outbox, Quarantine
from mailbot.web.monitoring import Monitoring
from mailbot.web.serve import Site
from tests.boardsite import Daemon, add_request, wait_until
from tests.servers import free_port, wait_for_port


class Served:
    """The monitoring endpoints of an in-process setup, on a free port."""

    def __init__(self, monitoring: Monitoring) -> None:
        port = free_port()
        self.site = Site("monitoring", monitoring.app(), "127.0.0.1", port, "")
        self.site.bind()
        self.thread = threading.Thread(target=asyncio.run, args=(self.site.serve(),), daemon=True)
        self.thread.start()
        wait_for_port(port)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def stop(self) -> None:
        self.site.stop()
        self.thread.join(timeout=10)
        self.site.close()


@pytest.fixture
def served(desk):
    server = Served(Monitoring(desk.config, desk.sessions, desk.clock))
    yield server
    server.stop()


def value(text: str, name: str, **labels: str) -> float:
    """A sample of the exposition text."""
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(selector) + r"\}" if labels else "") + r" (\S+)"
    match = re.search("^" + pattern + "$", text, re.M)
    assert match, f"{name} {labels} not in the metrics"
    return float(match[1])


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_count_mail_received_processed_and_sent(desk, served):
    mailbox = f"{desk.mailbox.user}@{desk.mailbox.host}/INBOX"
    before = {name: counter(name) for name in ("mailbot_mail_processed_total",
                                                "mailbot_outgoing_sent_total")}
    queued = counter("mailbot_outgoing_queued_total", kind="ack")
    desk.write("ivanov@zavod.example", "Не запускается АРМ", "АРМ не запускается.")
    desk.write("ivanov@zavod.example", "Ещё вопрос", "Как настроить отчёт?")
    desk.run()
    text = served.client.get("/metrics").text
    assert value(text, "mailbot_mail_received_total", mailbox=mailbox) == 2
    assert value(text, "mailbot_mail_stored_total", mailbox=mailbox) == 2
    assert value(text, "mailbot_mail_processed_total") == before["mailbot_mail_processed_total"] + 2
    assert value(text, "mailbot_outgoing_queued_total", kind="ack") == queued + 2
    assert value(text, "mailbot_outgoing_sent_total") >= before["mailbot_outgoing_sent_total"] + 2
    assert value(text, "mailbot_imap_last_sync_timestamp_seconds", mailbox=mailbox) > 1.7e9
    assert value(text, "mailbot_parse_seconds_count") >= 2
    assert value(text, "mailbot_process_seconds_count") >= 2
    assert value(text, "process_resident_memory_bytes") > 0  # the process's own collectors


def test_metrics_read_queue_depths_and_sla_breaches_from_the_database(desk, served):
    now = desk.clock.now()
    with desk.sessions.begin() as session:
        for n in range(3):
            session.add(Inbound(dedup_key=f"sha256:{n}", source="ingest", raw=b"x", size=1,
                                received_at=now - timedelta(minutes=10 * n)))
        session.add(Outbox(message_id="m1@x", kind="ack", mail_from="s@x", recipients=["a@b.example"],
                           raw=b"x", created_at=now - timedelta(minutes=7)))
        session.flush()
        session.add(Quarantine(inbound_id=session.query(Inbound.id).first()[0], stage="parse",
                               error="bad"))
    add_request(desk, "ТП-2026-900001", level=3, received=now - timedelta(hours=3),
                due=timedelta(hours=2))
    add_request(desk, "ТП-2026-900002", level=3, received=now - timedelta(hours=3),
                due=timedelta(hours=2), reacted=timedelta(hours=1))
    add_request(desk, "ТП-2026-900003", level=1, received=now - timedelta(minutes=5))
    text = served.client.get("/metrics").text
    assert value(text, "mailbot_database_up") == 1
    assert value(text, "mailbot_inbound_pending") == 3
    assert value(text, "mailbot_inbound_oldest_pending_age_seconds") == 20 * 60
    assert value(text, "mailbot_outbox_oldest_pending_age_seconds") == 7 * 60
    assert value(text, "mailbot_outbox_pending") == 1
    assert value(text, "mailbot_quarantine_open") == 1
    assert value(text, "mailbot_sla_breached_requests", level="3") == 1
    assert value(text, "mailbot_sla_breached_requests", level="1") == 0


def test_readyz_reports_a_stuck_backlog(desk, served):
    assert served.client.get("/readyz").status_code == 200
    assert served.client.get("/healthz").text == "ok\n"
    with desk.sessions.begin() as session:
        session.add(Inbound(dedup_key="sha256:old", source="ingest", raw=b"x", size=1,
                            received_at=desk.clock.now() - timedelta(minutes=11)))
    answer = served.client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["backlog"].startswith("stuck: the oldest stored mail waits since")


def test_readyz_and_metrics_report_a_database_outage(desk):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    sessions = db.make_sessionmaker(db.make_engine(dead, connect_args={"connect_timeout": 2}))
    server = Served(Monitoring(with_overrides(desk.config, database={"url": dead}), sessions,
                               desk.clock))
    try:
        answer = server.client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["database"].startswith("unavailable: ")
        metrics = server.client.get("/metrics")
        assert metrics.status_code == 200 and value(metrics.text, "mailbot_database_up") == 0
        assert server.client.get("/healthz").status_code == 200  # alive: restarting would not help
    finally:
        server.stop()


def test_the_daemon_serves_the_board_and_the_monitoring_endpoints(desk, tmp_path):
    """A real `mailbot run` with [web] and [monitoring]: healthy and ready, counts a mail, serves
    the board; with the SMTP server gone it is not ready; SIGTERM stops it all."""
    daemon = Daemon(desk, tmp_path).start()
    try:
        client = httpx.Client(timeout=10)
        assert client.get(daemon.metrics + "/healthz").status_code == 200
        wait_until(lambda: client.get(daemon.metrics + "/readyz").status_code == 200, 10, "ready")
        assert client.get(daemon.metrics + "/readyz").json()["checks"] == {
            "database": "ok", "backlog": "ok", "imap": "ok", "smtp": "ok"}
        board = client.get(daemon.board + "/requests", follow_redirects=False)
        assert board.status_code == 303 and board.headers["location"] == "/login"
        assert client.get(daemon.metrics + "/requests").status_code == 404  # no board there
        desk.write("ivanov@zavod.example", "Не запускается АРМ", "АРМ не запускается.")
        desk.sink.wait_for(1, timeout=15)
        metrics = client.get(daemon.metrics + "/metrics").text
        assert value(metrics, "mailbot_mail_processed_total") == 1
        assert value(metrics, "mailbot_outgoing_sent_total") >= 1

        desk.sink.stop()
        desk.write("ivanov@zavod.example", "Ещё", "Как настроить отчёт?")
        wait_until(lambda: client.get(daemon.metrics + "/readyz").status_code == 503, 15,
                   "not ready")
        assert client.get(daemon.metrics + "/readyz").json()["checks"]["smtp"] == "unreachable"
        assert value(client.get(daemon.metrics + "/metrics").text, "mailbot_smtp_up") == 0
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log


def test_mailbot_web_serves_the_board_alone_and_says_when_its_port_is_taken(desk, tmp_path):
    import socket
    import subprocess
    import sys

    port = free_port()
    config = tmp_path / "web.toml"
    config.write_text(f'[database]\nurl = "{desk.config.database.url}"\n[web]\nport = {port}\n')
    process = subprocess.Popen([sys.executable, "-m", "mailbot", "--config", str(config), "web"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, timeout=20)
        assert httpx.get(f"http://127.0.0.1:{port}/login").status_code == 200
        with socket.create_server(("127.0.0.1", 0)) as taken:
            busy = tmp_path / "busy.toml"
            busy.write_text(f'[database]\nurl = "{desk.config.database.url}"\n'
                            f'[web]\nport = {taken.getsockname()[1]}\n')
            second = subprocess.run([sys.executable, "-m", "mailbot", "--config", str(busy), "web"],
                                    capture_output=True, text=True, timeout=30)
        assert second.returncode == 69
        assert second.stderr.strip().startswith("mailbot: board: cannot listen on 127.0.0.1:")
        assert second.stderr.strip().count("\n") == 0
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert process.returncode == 0, output
    assert f"supervisors' board: http://127.0.0.1:{port}/" in output
