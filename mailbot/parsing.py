"""Parsing in worker processes, each parse under a wall-clock deadline.

Parsing is CPU-bound Python, and its input is mail anyone can send: every parse runs in
a worker process (:class:`Workers`), never in the daemon's own, so that one that takes
too long can be stopped. A message whose parse passes the deadline (``limits.parse_timeout``)
has its worker killed and replaced at once; it fails with :class:`ParseTimeout` (the
processor quarantines it) and the messages handed over with it are parsed again by another
worker. A worker that dies otherwise (killed from outside) costs its message one more try
in a new worker, then :class:`ParseCrashed`.

The daemon hands every commit of new mail to :meth:`ParsePool.ahead`, so the workers parse
it while the processor is still busy with the batch before; the processor then takes the
results (:meth:`ParsePool.parsers`) for the rows it claims. A worker hands back the mail
without the bytes of its files: they stay in the raw mail (:mod:`mailbot.register.files`), so they
neither travel back nor wait in memory for their batch.

Workers are forked from a server process that has imported the parsers (multiprocessing's
``forkserver``): a new one is ready in milliseconds, and none inherits the daemon's threads.
They ignore SIGINT (Ctrl+C reaches the whole process group: the daemon stops them).
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.machinery import ModuleSpec
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from typing import NamedTuple

from .parsers import ParsedMail, ParseOptions, parse_mail

log = logging.getLogger(__name__)

PARALLEL_MIN = 4  # fewer messages ahead of their batch are left for the batch to hand over
AHEAD_BYTES = 64 * 1024 * 1024  # mail being parsed ahead (raw) or parsed and not yet taken, at most
AHEAD_TTL = 300.0  # seconds a result waits to be taken (another daemon may process the row)
WORKER_NICENESS = 10  # added to a worker's nice value (see _serve)
DEFAULT_TIMEOUT = 30.0  # seconds a parse may take (limits.parse_timeout)
CRASH_TRIES = 2  # workers a message may take down (killed from outside) before it fails
# A message handed over alone and bigger than this is not kept in the daemon while a worker
# parses it (it would be there twice): a worker dying on it is not given a second try.
KEEP_BYTES = 1024 * 1024
# Mail goes to the workers in chunks: each hand-off (and each result) needs a moment of the
# daemon's busy interpreter. With one message per task the workflow waited 1.3-1.5 s for
# parsing in the ingest benchmark while a CPU stood idle; in chunks of 16, 0.5-1.0 s, and
# all was processed 0.4-0.6 s sooner. Results come back one message at a time.
CHUNK_MAILS = 16
CHUNK_BYTES = 4 * 1024 * 1024

Parse = Callable[[], ParsedMail]


class ParseAborted(Exception):
    """A parse that gave no result; the message says why, for the quarantine."""


class ParseTimeout(ParseAborted):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"parse timed out after {seconds:g} s (its worker process was killed)")


class ParseCrashed(ParseAborted):
    def __init__(self, exitcode: int | None, tries: int) -> None:
        super().__init__(f"parsing process died {'once' if tries == 1 else f'{tries} times'} "
                         f"on this message (exit code {exitcode})")


class ParsingStopped(Exception):
    """The workers were stopped (the daemon is stopping) before this message was parsed."""


# ---------------------------------------------------------------- in the worker process

_READY = "ready"  # a worker's first word: it has started and takes jobs

def _serve(conn: Connection) -> None:
    """A worker's life: parse each message of each job, send each result as it is done."""
    # Ctrl+C reaches the whole process group, systemd's SIGTERM the whole cgroup: both are
    # for the daemon, which then stops its workers (a worker dying first would be replaced)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(WORKER_NICENESS)  # bulk work: the daemon's own (workflow, IMAP, sending) goes first
    conn.send(_READY)
    while True:
        try:
            count, options, keep_files = conn.recv()
            raws = [conn.recv_bytes() for _ in range(count)]
        except (EOFError, OSError):
            return  # the daemon has gone, or closed us
        for raw in raws:
            try:
                result: ParsedMail | Exception = parse_mail(raw, options)
                if not keep_files:
                    result = _without_file_bytes(result)
            except Exception as exc:  # noqa: BLE001 - raised again for this message in the daemon
                result = exc
            try:
                conn.send(result)
            except (EOFError, OSError):
                return
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                conn.send(RuntimeError(f"{type(result).__name__}: {result}"))


def _without_file_bytes(mail: ParsedMail) -> ParsedMail:
    if not mail.attachments:
        return mail
    return replace(mail, attachments=tuple(a.kept() for a in mail.attachments))


# ---------------------------------------------------------------- in the daemon

@contextmanager
def _main_module_not_rerun() -> Iterator[None]:
    """Workers started now do not import the daemon's main module again.

    A new process re-runs the parent's ``__main__`` (the CLI, and with it SQLAlchemy, IMAP
    and SMTP code: half a second per worker) unless its spec names a ``*.__main__`` module;
    workers need only this package, so they are started as if the daemon ran as
    ``python -m mailbot``.
    """
    main = sys.modules["__main__"]
    saved = getattr(main, "__spec__", None)
    main.__spec__ = ModuleSpec("mailbot.__main__", None)
    try:
        yield
    finally:
        main.__spec__ = saved


def _context() -> multiprocessing.context.BaseContext:
    """forkserver: a worker is forked from a clean process that has the parsers imported."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def start_server() -> None:
    """Start the server that parsing processes are forked from, now: it imports the parsers
    (a third of a second), which a single run lets it do on another CPU while the run's own
    imports go on, instead of after its first look at the mailbox."""
    _context()
    with _main_module_not_rerun():
        forkserver.ensure_running()


@dataclass
class _Job:
    """Messages for one worker: their futures and raw bytes, in order."""

    futures: deque[Future]
    raws: deque[bytes | None]  # None: handed over and not kept (see KEEP_BYTES)
    options: ParseOptions
    keep_files: bool
    tries: deque[int] = field(default_factory=deque)  # workers each message has taken down

    def __post_init__(self) -> None:
        if not self.tries:
            self.tries = deque(0 for _ in self.futures)


class _Worker:
    """One worker process and the job it is on."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), name="mailbot-parse", daemon=True)
        with _main_module_not_rerun():
            self.process.start()
        child.close()
        self.ready = False  # it said so (its startup does not count against a deadline)
        self.job: _Job | None = None
        self.started = 0.0  # monotonic time its current message was handed over

    def give(self, job: _Job) -> None:
        """Hand the job over; the raw mail as it is (pickling it would copy it once more)."""
        self.job, self.started = job, time.monotonic()
        self.conn.send((len(job.raws), job.options, job.keep_files))
        for raw in job.raws:
            self.conn.send_bytes(raw)
        if len(job.raws) == 1 and len(job.raws[0]) > KEEP_BYTES:
            job.raws[0] = None

    def kill(self) -> None:
        self.process.kill()
        self.process.join(1.0)
        self.conn.close()


_all_workers: weakref.WeakSet[Workers] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, before multiprocessing ends its children: no worker is replaced meanwhile."""
    for workers in list(_all_workers):
        workers.close()


class Workers:
    """Worker processes and a thread that hands them jobs, takes results and keeps deadlines.

    :meth:`submit` is thread-safe and returns one future per message; it fails with
    :class:`ParseTimeout` or :class:`ParseCrashed` (the message alone), with
    :class:`ParsingStopped` once :meth:`close` was called, or with the parser's own
    exception (:class:`~mailbot.parsers.MailTooLarge`).
    """

    def __init__(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.count = max(1, count)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._workers: list[_Worker] = []
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._thread: threading.Thread | None = None
        self._closing = False
        self._refusing = False  # closed for good: a submit fails at once
        self._up = threading.Event()  # the first workers have started
        _all_workers.add(self)

    @property
    def started(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (those started so far)."""
        return [worker.process.pid for worker in list(self._workers)]

    def start(self, wait: bool = False) -> None:
        """Start the processes now (``wait``: until they are up); a closed pool starts again."""
        with self._lock:
            self._refusing = False
            self._start_locked()
        if wait and not self._up.wait(60.0):
            raise RuntimeError("the parsing processes did not start within 60 s")

    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="parse-workers", daemon=True)
            self._thread.start()

    def submit(self, raws: list[bytes], options: ParseOptions, keep_files: bool = False,
               first: bool = False) -> list[Future]:
        """Parse these messages in one worker; a future per message (``first``: before the
        messages already waiting)."""
        futures = [Future() for _ in raws]
        with self._lock:
            if not self._refusing:
                self._start_locked()
            if self._closing:
                for future in futures:
                    future.set_exception(ParsingStopped())
                return futures
            job = _Job(deque(futures), deque(raws), options, keep_files)
            self._queue.appendleft(job) if first else self._queue.append(job)
        self._wake()
        return futures

    def close(self, wait: bool = True, refuse: bool = False) -> None:
        """Stop the processes; what was not parsed yet fails with ParsingStopped.

        A later submit starts them again, unless ``refuse`` (then only :meth:`start` does).
        ``wait``: until they are gone (a second or so at most).
        """
        with self._lock:
            self._closing = True
            self._refusing = self._refusing or refuse
            thread = self._thread
        self._wake()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b".")
        except OSError:
            pass

    # -------------------------------------------------------- the thread

    def _run(self) -> None:
        context = _context()
        try:
            while not self._closing:
                self._fill(context)
                if all(worker.ready for worker in self._workers):
                    self._up.set()
                self._assign()
                self._step(self._until_deadline())
        except Exception:  # noqa: BLE001 - never leave callers waiting
            log.exception("the parsing processes failed")
        finally:
            self._stop_all()

    def _fill(self, context: multiprocessing.context.BaseContext) -> None:
        """As many workers as wanted (a dead or killed one is replaced here)."""
        while len(self._workers) < self.count and not self._closing:
            self._workers.append(_Worker(context))

    def _assign(self) -> None:
        for worker in self._workers:
            if worker.job is not None or not worker.ready:
                continue
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.popleft()
            try:
                worker.give(job)
            except OSError:  # it died in between: its job goes to another one
                worker.job = None
                with self._lock:
                    self._queue.appendleft(job)

    def _until_deadline(self) -> float | None:
        busy = [w.started for w in self._workers if w.job is not None]
        return max(0.0, min(busy) + self.timeout - time.monotonic()) if busy else None

    def _step(self, timeout: float | None) -> None:
        """Wait for results, a wake-up, a death or the nearest deadline; act on each."""
        watched = {self._wake_r: None}
        for worker in self._workers:
            watched[worker.conn] = worker
            watched[worker.process.sentinel] = worker
        for ready in wait(list(watched), timeout):
            worker = watched[ready]
            if worker is None:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
            elif ready is worker.conn:
                self._receive(worker)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.job is not None and now - worker.started >= self.timeout:
                self._replace(worker, ParseTimeout(self.timeout))
            elif not worker.process.is_alive():
                self._replace(worker, None)

    def _receive(self, worker: _Worker) -> None:
        """Every result the worker has sent so far."""
        try:
            if not worker.ready:
                worker.ready = worker.conn.recv() == _READY
            while worker.job is not None and worker.conn.poll():
                result = worker.conn.recv()
                job = worker.job
                future = job.futures.popleft()
                job.raws.popleft()
                job.tries.popleft()
                worker.started = time.monotonic()  # its next message starts now
                if not job.futures:
                    worker.job = None
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except (EOFError, OSError):
            pass  # it died: seen below as a dead process

    def _replace(self, worker: _Worker, error: ParseAborted | None) -> None:
        """Kill the worker; its current message fails with ``error`` (None: it died, try again)."""
        worker.kill()
        self._workers.remove(worker)
        job = worker.job
        if job is None:
            return
        if error is None:
            job.tries[0] += 1
            if job.tries[0] >= CRASH_TRIES or job.raws[0] is None:
                error = ParseCrashed(worker.process.exitcode, job.tries[0])
            log.warning("a parsing process died (exit code %s)%s", worker.process.exitcode,
                        "" if error else "; its message is parsed again")
        if error is not None:
            if isinstance(error, ParseTimeout):
                log.warning("a parse took more than %g s: its process is killed and replaced", self.timeout)
            job.raws.popleft()
            job.tries.popleft()
            job.futures.popleft().set_exception(error)
        if job.futures:  # the rest of its job: at once, in another worker
            with self._lock:
                self._queue.appendleft(job)

    def _stop_all(self) -> None:
        with self._lock:
            self._closing = True
            workers, self._workers = self._workers, []
            jobs = [w.job for w in workers if w.job is not None] + list(self._queue)
            self._queue.clear()
        for worker in workers:
            worker.kill()
        for job in jobs:
            for future in job.futures:
                if not future.done():
                    future.set_exception(ParsingStopped())
        self._up.clear()


# ---------------------------------------------------------------- the processor's view

def _chunks(items: list[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    """Mail in hand-offs of at most CHUNK_MAILS messages and CHUNK_BYTES (at least one message)."""
    chunk: list[tuple[int, bytes]] = []
    size = 0
    for item in items:
        if chunk and (len(chunk) == CHUNK_MAILS or size + len(item[1]) > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item[1])
    if chunk:
        yield chunk


def _held(mail: ParsedMail) -> int:
    """Bytes a parsed message holds while it waits for its batch (about)."""
    return (len(mail.text) + len(mail.html or "") + len(mail.new_text)
            + sum(len(a.data) for a in mail.attachments if a.data is not None))


def default_workers() -> int:
    """One parsing process per CPU, at least 1, at most 4.

    Not one fewer than the CPUs: the daemon's own process waits for the database often
    enough that the workers, PostgreSQL and it balance out (measured on 2 CPUs: 2 workers
    took the ingest benchmark from 11.7 s to 9.0 s).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


class _Ahead(NamedTuple):
    """A message handed to the workers ahead of its batch."""

    future: Future  # its ParsedMail (or the exception it raised)
    held: int  # bytes it holds: raw until parsed, then the parsed mail's (see _held)
    started: float  # monotonic time it was handed over


class ParsePool:
    """The processor's parsing: worker processes, and the results parsed ahead of their batch."""

    def __init__(self, options: ParseOptions, workers: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.options = options
        self.workers = Workers(default_workers() if workers is None else workers, timeout)
        self._lock = threading.RLock()  # a done callback may run at once, in the submitting thread
        self._ahead: dict[int, _Ahead] = {}  # by inbound id

    @property
    def started(self) -> bool:
        return self.workers.started

    def wanted(self, candidates: list[tuple[int, int]]) -> list[int]:
        """Which of these (id, size) the workers could parse ahead: not taken yet, within the budget."""
        with self._lock:
            held = sum(entry.held for entry in self._ahead.values())
            chosen = []
            for inbound_id, size in candidates:
                if inbound_id in self._ahead:
                    continue
                if held + size > AHEAD_BYTES:
                    break  # the processor reads the rest from the database
                chosen.append(inbound_id)
                held += size
            return chosen

    def start(self, wait: bool = False) -> None:
        """Start the worker processes now (``wait``: until they are up)."""
        self.workers.start(wait)

    def expect(self, count: int) -> None:
        """``count`` messages are coming: start the workers now (they take a moment)."""
        if count:
            self.start()

    def close(self) -> None:
        """Stop the worker processes (started again when needed); parses under way fail with
        ParsingStopped."""
        with self._lock:
            self._ahead.clear()
        self.workers.close()

    def stop(self) -> None:
        """Stop the worker processes for good (until :meth:`start`), without waiting."""
        self.workers.close(wait=False, refuse=True)

    def ahead(self, stored: dict[int, bytes], first: bool = False) -> None:
        """Start parsing mail just stored, by ``inbound`` id (thread-safe, never raises);
        ``first``: before the mail already waiting (live mail, before a backlog's)."""
        if len(stored) < PARALLEL_MIN:
            return  # the batch that takes it hands it over: as soon, one hand-off fewer
        now = time.monotonic()
        with self._lock:
            for key in [k for k, entry in self._ahead.items() if now - entry.started > AHEAD_TTL]:
                del self._ahead[key]
            wanted = self.wanted([(i, len(raw)) for i, raw in stored.items()])
            for inbound_id, future in self._submit([(i, stored[i]) for i in wanted], first).items():
                self._ahead[inbound_id] = _Ahead(future, len(stored[inbound_id]), now)
                future.add_done_callback(partial(self._parsed_ahead, inbound_id))

    def _parsed_ahead(self, inbound_id: int, future: Future) -> None:
        """A message parsed ahead holds its result now, no longer its raw bytes."""
        if future.cancelled() or future.exception() is not None:
            return
        with self._lock:
            entry = self._ahead.get(inbound_id)
            if entry is not None and entry.future is future:
                self._ahead[inbound_id] = entry._replace(held=_held(future.result()))

    def parsers(self, ids: list[int], read_many: Callable[[list[int]], dict[int, bytes]],
                urgent: bool = False) -> list[Parse]:
        """For each ``inbound`` id, a call that returns its ParsedMail (or raises why not).

        Mail parsed ahead is taken from the workers; the bytes of the rest are read
        (``read_many``) and handed to the workers now, before the mail parsed ahead (the
        batch waits for it: a new mail taken out of turn is not held up by a backlog).
        ``urgent`` (live mail): mail handed over ahead and not parsed yet is handed over
        again, first, as it may wait behind a backlog's (the first parse goes to waste).
        """
        with self._lock:
            taken = {i: self._ahead.pop(i).future for i in ids if i in self._ahead}
            if urgent:
                taken = {i: future for i, future in taken.items() if future.done()}
        rest = [i for i in ids if i not in taken]
        raws = read_many(rest)
        taken.update(self._submit([(i, raws[i]) for i in rest], first=True))
        return [partial(_result, taken[i]) for i in ids]

    def put_back(self, parsed: dict[int, ParsedMail]) -> None:
        """Mail a batch took and left for a later one (cut short for live mail): the batch
        that claims it takes it parsed."""
        now = time.monotonic()
        with self._lock:
            for inbound_id, mail in parsed.items():
                future: Future = Future()
                future.set_result(mail)
                self._ahead[inbound_id] = _Ahead(future, _held(mail), now)

    def _submit(self, items: list[tuple[int, bytes]], first: bool = False) -> dict[int, Future]:
        placed = {}
        chunks = list(_chunks(items))
        for chunk in reversed(chunks) if first else chunks:  # in order, at the front
            futures = self.workers.submit([raw for _, raw in chunk], self.options, first=first)
            placed.update({inbound_id: future for (inbound_id, _), future in zip(chunk, futures)})
        return placed


def _result(future: Future) -> ParsedMail:
    return future.result()


# ---------------------------------------------------------------- files read back

_readers: Workers | None = None
_readers_lock = threading.Lock()


def parse_keeping_files(raw: bytes, options: ParseOptions, timeout: float = DEFAULT_TIMEOUT) -> ParsedMail:
    """:func:`parse_mail` with the bytes of its files, in a worker process under the deadline.

    For reading files back (:mod:`mailbot.register.files`): one worker per process, started on first
    use and kept. Raises :class:`ParseAborted` when the parse fails.
    """
    global _readers  # noqa: PLW0603 - one reader per process
    with _readers_lock:
        if _readers is None or _readers.timeout != timeout:
            if _readers is not None:
                _readers.close()
            _readers = Workers(1, timeout)
        readers = _readers
    return readers.submit([raw], options, keep_files=True)[0].result()


def stop_reading() -> None:
    """Stop the reader's worker now, without waiting (the daemon is stopping); a read under way
    fails with ParsingStopped, a later one starts a new worker."""
    global _readers  # noqa: PLW0603
    with _readers_lock:
        readers, _readers = _readers, None
    if readers is not None:
        readers.close(wait=False, refuse=True)
