"""Peak memory of storing and processing one large mail (issue 20: < 4 × the message size).

Usage: .venv/bin/python benchmarks/memory.py [--mb 25]

A fresh database (MAILBOT_TEST_DATABASE_URL, else an embedded PostgreSQL), one
mail with a single large attachment; the mail goes the daemon's way: stored in
``inbound`` (as the IMAP and ingest paths do), then parsed, classified and
registered by the processor, its attachment kept. Reported: the peak RSS growth
over the baseline after a warm-up with a small mail, while storing, and while
processing: the process's and its parsing processes' together (every parse runs
in one), sampled every 2 ms; the larger counts.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from mailbot.cli.main import release_big_buffers_to_the_os  # noqa: E402
from mailbot.clock import Clock  # noqa: E402
from mailbot.config import load_config, with_overrides  # noqa: E402
from mailbot.processor import Processor  # noqa: E402
from mailbot.register import db  # noqa: E402
from mailbot.register.models import AttachmentRow  # noqa: E402
from mailbot.transport.store import RawMail, store  # noqa: E402
from tests.servers import embedded_postgres_url, fresh_database  # noqa: E402


def mail(size: int, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "ivanov@zavod.example"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Логи сервера, часть {n}"
    msg["Message-ID"] = f"<big-{n}-{size}@zavod.example>"
    msg.set_content("Добрый день! Во вложении архив с логами сервера.")
    msg.add_attachment(os.urandom(size), maintype="application", subtype="zip",
                       filename="logs.zip")
    return msg.as_bytes()


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _vm(pid: int, field: str) -> float:
    """A /proc/<pid>/status field (VmRSS, VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak(pid: int) -> None:
    """Start /proc/<pid>/status VmHWM (peak RSS) again from the current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


class _SumSampler:
    """The largest sum of these processes' RSS (MB), sampled every 2 ms until :meth:`stop`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak = pids, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, sum(_vm(pid, "VmRSS") for pid in self.pids))

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


def measure(path: Path, url: str) -> None:
    """In a fresh process: warm up, then store and process the mail in ``path``."""
    release_big_buffers_to_the_os()  # as `mailbot` does at start
    config = with_overrides(load_config(None, environ={}), database={"url": url},
                            limits={"max_message_bytes": 200 * 2**20,
                                    "max_attachment_bytes": 200 * 2**20})
    engine = db.make_engine(url)
    db.init_schema(engine)
    sessions = db.make_sessionmaker(engine)
    processor = Processor(config, sessions, Clock())

    def stored(raw: bytes) -> None:
        with sessions.begin() as session:
            store(session, [RawMail(raw, "benchmark")])

    stored(mail(50_000, 0))  # warm-up: imports, connections, caches
    processor.run_pending()
    workers = processor.parsing.workers.pids
    worker_baseline = {pid: _vm(pid, "VmRSS") for pid in workers}
    baseline = current_rss_mb()
    size_mb = path.stat().st_size / 2**20
    started = time.perf_counter()
    _reset_peak(os.getpid())  # the process's peak so far (imports, start-up) is not storing's
    stored(path.read_bytes())  # as the IMAP fetcher or `mailbot ingest` does, then forgets it
    storing = max(_vm(os.getpid(), "VmHWM") - baseline, 0.0)
    for pid in [os.getpid(), *workers]:
        _reset_peak(pid)
    sampler = _SumSampler([os.getpid(), *workers])
    processor.run_pending()
    together = max(sampler.stop() - baseline - sum(worker_baseline.values()), 0.0)
    elapsed = time.perf_counter() - started
    own = max(_vm(os.getpid(), "VmHWM") - baseline, 0.0)
    parsing = sum(max(_vm(pid, "VmHWM") - worker_baseline[pid], 0.0) for pid in workers)
    growth = max(storing, together)
    processor.close()
    with sessions() as session:
        kept = session.scalar(select(func.max(AttachmentRow.size)))
    print(f"message: {size_mb:.1f} MB (attachment kept: {kept / 2**20:.1f} MB)")
    print(f"stored + processed in {elapsed:.2f} s")
    print(f"peak RSS growth: storing {storing:.0f} MB; processing {together:.0f} MB (the process "
          f"and its parsing processes together, sampled every 2 ms; their own peaks: {own:.0f} MB "
          f"and {parsing:.0f} MB)")
    print(f"the larger: {growth:.0f} MB = {growth / size_mb:.2f} × the message "
          f"(target < 4 ×, issue 20) {'OK' if growth < 4 * size_mb else 'OVER TARGET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=25.0, help="size of the whole message in MB")
    parser.add_argument("--measure", nargs=2, metavar=("FILE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), args.measure[1])
        return
    url = fresh_database(os.environ.get("MAILBOT_TEST_DATABASE_URL") or embedded_postgres_url())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.eml"
        path.write_bytes(mail(int(args.mb * 2**20 * 3 / 4), 1))  # base64: 4/3 of the attachment
        subprocess.run([sys.executable, __file__, "--measure", str(path), url], check=True)


if __name__ == "__main__":
    main()
