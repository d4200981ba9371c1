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

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        """Wait until ``text`` is in the log; fail at once when the daemon has exited."""
        wait_until(lambda: text in self.log or self.process.poll() is not None, timeout, repr(text))
        assert text in self.log, f"exited without {text!r}: {self.log[-3000:]}"

    @property
    def tracebacks(self) -> str:
        """The log when it holds a traceback, else ''."""
        return self.log if "Traceback" in self.log else ""

    def stop(self, sig: int = signal.SIGTERM, group: bool = False) -> int:
        """``sig`` (SIGTERM, as systemd stops it), to the whole process group when ``group`` (as
        Ctrl+C does); the exit code. How long it took is kept in ``stopped_in``."""
        started = time.monotonic()
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running 30 s after {sig!r}: {self.log[-3000:]}") from None
        self.stopped_in = time.monotonic() - started
        return code

    def kill(self) -> None:
        """SIGKILL to the daemon and its parsing workers at once."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group has gone
        self.process.wait(timeout=10)
