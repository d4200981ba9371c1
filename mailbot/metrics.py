"""What the daemon counts for Prometheus (``/metrics``: :mod:`mailbot.web.monitoring`).

Counters and histograms are updated where the work happens, each an
in-memory increment (no I/O on the hot path): the IMAP sync, the processor,
the outbox, the sender. What the database knows better (queue depths, the age
of the oldest pending item, open SLA breaches) is read when Prometheus scrapes,
by :class:`DatabaseCollector`, with a few cheap queries on partial indexes.
Every name starts with ``mailbot_``. A process counts its own work: mail that
``mailbot ingest`` stores shows up as processed by the daemon.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from .clock import Clock

log = logging.getLogger(__name__)
disable_created_metrics()  # no *_created series: the process start time says as much

MAIL_RECEIVED = Counter("mailbot_mail_received", "Messages fetched from an IMAP folder",
                        ["mailbox"])
MAIL_STORED = Counter("mailbot_mail_stored", "New messages stored in inbound (duplicates not "
                      "counted)", ["mailbox"])
MAIL_PROCESSED = Counter("mailbot_mail_processed", "Stored messages taken through the rules "
                         "and the workflow")
MAIL_QUARANTINED = Counter("mailbot_mail_quarantined", "Stored messages quarantined", ["stage"])
OUTGOING_QUEUED = Counter("mailbot_outgoing_queued", "Mail written to the outbox", ["kind"])
OUTGOING_SENT = Counter("mailbot_outgoing_sent", "Outbox mail accepted by the SMTP server")
OUTGOING_RETRIED = Counter("mailbot_outgoing_retried", "Outbox mail that failed for now and "
                           "will be tried again")
OUTGOING_FAILED = Counter("mailbot_outgoing_failed", "Outbox mail that failed for good")
PARSE_SECONDS = Histogram(
    "mailbot_parse_seconds", "Time a batch waited for a message to be parsed (parsed in the "
    "daemon, or by a worker process ahead of it)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
PROCESS_SECONDS = Histogram(
    "mailbot_process_seconds", "Rules and workflow of one message (its share of the batch's "
    "flush not included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
BATCH_SECONDS = Histogram(
    "mailbot_batch_seconds", "One processor batch, from the claim to the commit",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
IMAP_LAST_SYNC = Gauge("mailbot_imap_last_sync_timestamp_seconds",
                       "When a sync of the IMAP folder last succeeded (Unix time)", ["mailbox"])
IMAP_UP = Gauge("mailbot_imap_up", "Whether the folder's watcher is connected to the IMAP "
                "server", ["mailbox"])
SMTP_UP = Gauge("mailbot_smtp_up", "0 while the SMTP server is found unreachable, else 1")
SMTP_UP.set(1)

# one round trip: queue depths, the oldest pending items, open quarantine items
_QUEUES = text("""
    SELECT (SELECT count(*) FROM inbound WHERE status = 'pending'),
           (SELECT min(received_at) FROM inbound WHERE status = 'pending'),
           (SELECT count(*) FROM outbox WHERE status = 'pending'),
           (SELECT min(created_at) FROM outbox WHERE status = 'pending'),
           (SELECT count(*) FROM quarantine WHERE resolved_at IS NULL)""")
# requests whose reaction deadline has passed without a reaction, by level
_BREACHED = text("""
    SELECT coalesce(level, 0), count(*) FROM requests
    WHERE first_reaction_at IS NULL AND (status IN ('closed', 'rejected')) IS FALSE
      AND due_at < :now
    GROUP BY 1""")


class DatabaseCollector(Collector):
    """Gauges read from the register when Prometheus scrapes (a 2-second statement limit).

    When the database cannot answer, only ``mailbot_database_up 0`` is reported.
    """

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("mailbot_database_up", "Whether the scrape could read the database")
        try:
            queues, breached = self._read()
        except Exception as error:  # the scrape reports the outage; the log says why
            log.warning("metrics: cannot read the database: %s", str(error).splitlines()[0])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self.clock.now()
        inbound, inbound_oldest, outbox, outbox_oldest, quarantine = queues
        yield _gauge("mailbot_inbound_pending", "Stored messages waiting to be processed", inbound)
        yield _gauge("mailbot_inbound_oldest_pending_age_seconds",
                     "Age of the oldest message waiting to be processed (0: none)",
                     (now - inbound_oldest).total_seconds() if inbound_oldest else 0)
        yield _gauge("mailbot_outbox_pending", "Outgoing mail waiting to be sent (or retried)", outbox)
        yield _gauge("mailbot_outbox_oldest_pending_age_seconds",
                     "Age of the oldest mail waiting to be sent (0: none)",
                     (now - outbox_oldest).total_seconds() if outbox_oldest else 0)
        yield _gauge("mailbot_quarantine_open", "Quarantined messages not retried or dropped",
                     quarantine)
        family = GaugeMetricFamily("mailbot_sla_breached_requests",
                                   "Open requests whose reaction deadline passed without a "
                                   "reaction, by level (0: no level yet)", labels=["level"])
        counts = dict(breached)
        for level in range(5):
            family.add_metric([str(level)], counts.get(level, 0))
        yield family

    def _read(self) -> tuple[tuple, list[tuple[int, int]]]:
        with self.sessions() as session:
            session.execute(text("SET LOCAL statement_timeout = 2000"))
            queues = tuple(session.execute(_QUEUES).one())
            breached = [tuple(row) for row in session.execute(_BREACHED, {"now": self.clock.now()})]
            session.rollback()
        return queues, breached


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
