"""Parsing in worker processes, started as soon as mail is stored.

Parsing is CPU-bound Python. The daemon hands every commit of new mail to
:meth:`ParsePool.ahead`, so the workers parse it while the processor is still
busy with the batch before; the processor then takes the results
(:meth:`ParsePool.parsers`) for the rows it claims. A worker hands back the
mail without the bytes of its files: they stay in the raw mail
(:mod:`mailbot.files`), so they neither travel back nor wait in memory for
their batch. A lone message (the usual case in the daemon) is parsed in the
calling process: no hand-off delay. Should a worker die, the message is parsed
in the calling process.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from functools import partial
from importlib.machinery import ModuleSpec
from typing import NamedTuple

from .parsers import ParsedMail, ParseOptions, parse_mail

log = logging.getLogger(__name__)

PARALLEL_MIN = 4  # fewer messages are parsed in the calling process
AHEAD_BYTES = 64 * 1024 * 1024  # mail being parsed ahead (raw) or parsed and not yet taken, at most
AHEAD_TTL = 300.0  # seconds a result waits to be taken (another daemon may process the row)
WORKER_NICENESS = 10  # added to a worker's nice value (see _worker_started)
# Mail goes to the workers in chunks: each hand-off (and each result) needs a moment of the
# daemon's busy interpreter, and the pool keeps only one task in reserve per worker. With one
# message per task the workflow waited 1.3-1.5 s for parsing in the ingest benchmark while a
# CPU stood idle; in chunks of 16, 0.5-1.0 s, and all was processed 0.4-0.6 s sooner.
CHUNK_MAILS = 16
CHUNK_BYTES = 4 * 1024 * 1024

Parse = Callable[[], ParsedMail]


@contextmanager
def _main_module_not_rerun() -> Iterator[None]:
    """Workers spawned now do not import the daemon's main module again.

    A spawned process re-runs the parent's ``__main__`` (the CLI, and with it
    SQLAlchemy, IMAP and SMTP code: half a second per worker) unless its spec
    names a ``*.__main__`` module; workers need only this package, so they are
    started as if the daemon ran as ``python -m mailbot``.
    """
    main = sys.modules["__main__"]
    saved = getattr(main, "__spec__", None)
    main.__spec__ = ModuleSpec("mailbot.__main__", None)
    try:
        yield
    finally:
        main.__spec__ = saved


def parse_in_worker(raws: list[bytes], options: ParseOptions) -> list[ParsedMail | Exception]:
    """:func:`parse_mail` of each, the files without their bytes (which stay in the raw mail).

    A message that fails (too large) is handed back as its exception: it alone is quarantined,
    not the chunk it came in.
    """
    parsed: list[ParsedMail | Exception] = []
    for raw in raws:
        try:
            parsed.append(_without_file_bytes(parse_mail(raw, options)))
        except Exception as exc:  # noqa: BLE001 - raised again for this message by ParsePool._result
            parsed.append(exc)
    return parsed


def _without_file_bytes(mail: ParsedMail) -> ParsedMail:
    if not mail.attachments:
        return mail
    return replace(mail, attachments=tuple(a.kept() for a in mail.attachments))


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


def _worker_started() -> None:
    """A worker runs below the daemon's priority: parsing ahead is bulk work, and the
    daemon's own (the workflow that waits for it, IMAP, sending) goes first. Measured on 2
    CPUs with one message per hand-off, the ingest benchmark stored its mail 0.9 s sooner;
    with chunked hand-offs the throughput is the same at nice 0, 4 and 10."""
    os.nice(WORKER_NICENESS)


def _held(mail: ParsedMail) -> int:
    """Bytes a parsed message holds while it waits for its batch (about)."""
    return (len(mail.text) + len(mail.html or "") + len(mail.new_text)
            + sum(len(a.data) for a in mail.attachments if a.data is not None))


def default_workers() -> int:
    """One parsing process per CPU, at most 4; none on a single CPU (parsing there is as fast).

    Not one fewer than the CPUs: the daemon's own process waits for the database
    often enough that the workers, PostgreSQL and it balance out (measured on 2
    CPUs: 2 workers took the ingest benchmark from 11.7 s to 9.0 s).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(4, cpus)


class _Ahead(NamedTuple):
    """A message handed to the workers ahead of its batch."""

    future: Future  # of its chunk: a ParsedMail (or the exception it raised) per message
    index: int  # its place in the chunk
    held: int  # bytes it holds: raw until parsed, then the parsed mail's (see _held)
    started: float  # monotonic time it was handed over


class ParsePool:
    """Worker processes that parse mail, and the results parsed ahead of their batch."""

    def __init__(self, options: ParseOptions, workers: int | None = None) -> None:
        self.options = options
        self.workers = default_workers() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.RLock()  # a done callback may run at once, in the submitting thread
        self._ahead: dict[int, _Ahead] = {}  # by inbound id
        self._starting: list[Future] = []  # one trivial task per worker: done once it is up

    @property
    def started(self) -> bool:
        return self._pool is not None

    @property
    def parallel(self) -> bool:
        """Whether there are worker processes to parse in."""
        return self.workers >= 1

    def wanted(self, candidates: list[tuple[int, int]]) -> list[int]:
        """Which of these (id, size) the workers could parse ahead: not taken yet, within the budget."""
        with self._lock:
            return self._wanted_locked(candidates)

    def _wanted_locked(self, candidates: list[tuple[int, int]]) -> list[int]:
        if not self._ready_locked():
            return []  # the workers are still starting: the processor parses this mail itself
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
        """Start the worker processes now (``wait``: until they are up).

        Workers take about half a second to start; until they are up, mail is
        parsed in the calling process rather than waiting for them.
        """
        if self.parallel:
            with self._lock:
                self._pool_locked()
                starting = list(self._starting)
            if wait:
                for future in starting:
                    future.result()

    def expect(self, count: int) -> None:
        """``count`` messages are coming: start the workers now if they will parse them
        (measured: a 1,000-mail run processed all 0.35 s sooner than starting them with the
        first stored mail)."""
        if count >= PARALLEL_MIN:
            try:
                self.start()
            except (RuntimeError, OSError) as exc:
                with self._lock:
                    self._failed_locked(exc)

    def close(self) -> None:
        """Stop the worker processes (started again when needed)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._ahead.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def ahead(self, stored: dict[int, bytes]) -> None:
        """Start parsing mail just stored, by ``inbound`` id (thread-safe, never raises)."""
        if len(stored) < PARALLEL_MIN or not self.parallel:
            return
        now = time.monotonic()
        with self._lock:
            for key in [k for k, entry in self._ahead.items() if now - entry.started > AHEAD_TTL]:
                del self._ahead[key]
            try:
                pool = self._pool_locked()
                wanted = self._wanted_locked([(i, len(raw)) for i, raw in stored.items()])
                placed = self._submit_locked(pool, [(i, stored[i]) for i in wanted])
                for inbound_id, (future, index) in placed.items():
                    self._ahead[inbound_id] = _Ahead(future, index, len(stored[inbound_id]), now)
                    future.add_done_callback(partial(self._parsed_ahead, inbound_id))
            except (BrokenProcessPool, RuntimeError, OSError) as exc:
                self._failed_locked(exc)

    def _parsed_ahead(self, inbound_id: int, future: Future) -> None:
        """A message parsed ahead holds its result now, no longer its raw bytes."""
        if future.cancelled() or future.exception() is not None:
            return
        with self._lock:
            entry = self._ahead.get(inbound_id)
            if entry is not None and entry.future is future:
                result = future.result()[entry.index]
                held = _held(result) if isinstance(result, ParsedMail) else 0
                self._ahead[inbound_id] = entry._replace(held=held)

    def parsers(self, ids: list[int], read_many: Callable[[list[int]], dict[int, bytes]],
                read: Callable[[int], bytes]) -> list[Parse]:
        """For each ``inbound`` id, a call that returns its ParsedMail.

        Mail parsed ahead is taken from the workers; the bytes of the rest are
        read (``read_many``) and the workers start on them now (parsed here while
        the workers are still starting). ``read`` fetches one message's bytes
        again should a worker die.
        """
        with self._lock:
            taken = {i: self._ahead.pop(i)[:2] for i in ids if i in self._ahead}
        raws = read_many([i for i in ids if i not in taken])
        inline = {i: partial(parse_mail, raws[i], self.options) for i in ids if i not in taken}
        if len(inline) >= PARALLEL_MIN and self.parallel:
            try:
                with self._lock:
                    pool = self._pool_locked()
                    if self._ready_locked():  # else this batch is parsed here while they start
                        taken.update(self._submit_locked(pool, [(i, raws[i]) for i in inline]))
            except (BrokenProcessPool, RuntimeError, OSError) as exc:
                with self._lock:
                    self._failed_locked(exc)
        return [partial(self._result, *taken[i], partial(self._parse_read, read, i)) if i in taken
                else inline[i] for i in ids]

    def _submit_locked(self, pool: ProcessPoolExecutor,
                       items: list[tuple[int, bytes]]) -> dict[int, tuple[Future, int]]:
        """Hand these (id, raw) to the workers; for each id, its chunk's future and its place in it."""
        placed = {}
        for chunk in _chunks(items):
            future = pool.submit(parse_in_worker, [raw for _, raw in chunk], self.options)
            placed.update({inbound_id: (future, index) for index, (inbound_id, _) in enumerate(chunk)})
        return placed

    def _result(self, future: Future, index: int, fallback: Parse) -> ParsedMail:
        try:
            result = future.result()[index]
        except BrokenProcessPool as exc:  # a worker died: parse here, start a new pool next time
            with self._lock:
                self._failed_locked(exc)
            return fallback()
        if isinstance(result, Exception):
            raise result
        return result

    def _parse_read(self, read: Callable[[int], bytes], inbound_id: int) -> ParsedMail:
        return parse_mail(read(inbound_id), self.options)

    def _pool_locked(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the daemon has threads (IMAP watchers, asyncio) holding locks
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_started)
            with _main_module_not_rerun():  # each submit to a pool with no idle worker spawns one
                self._starting = [pool.submit(len, b"") for _ in range(self.workers)]
            self._pool = pool
        return self._pool

    def _ready_locked(self) -> bool:
        return self._pool is not None and all(future.done() for future in self._starting)

    def _failed_locked(self, exc: BaseException) -> None:
        pool, self._pool = self._pool, None
        self._ahead.clear()
        if pool is not None:
            log.warning("parsing processes failed (%s); parsing in the daemon process", exc)
            pool.shutdown(wait=False, cancel_futures=True)
