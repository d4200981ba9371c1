"""A real `mailbot run` process for the tests: started on a config file, its log, stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(condition: Callable[[], bool], timeout: float, what: str = "") -> float:
    """Poll ``condition`` until it holds; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"waited {timeout:.0f} s for {what or condition}")
        time.sleep(0.05)
    return time.monotonic() - start


class MailbotProcess:
    """``mailbot --config CONFIG run`` in a session of its own (a kill takes its parsing
    workers too), its output in ``logfile``."""

    def __init__(self, config: Path, logfile: Path) -> None:
        self.config, self.logfile = config, logfile
        self.process: subprocess.Popen | None = None

    def start(self):
        with open(self.logfile, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailbot", "--config", str(self.config), "run"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_until(lambda: "mailbot is watching" in self.log or self.process.poll() is not None,
                   timeout=30, what="the daemon to start")
        assert self.process.poll() is None, self.log
        return self

    @property
    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def lines(self, text: str) -> list[str]:
        return [line for line in self.log.splitlines() if text in line]

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise

    def kill(self) -> None:
        """SIGKILL to the daemon and its parsing workers at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
