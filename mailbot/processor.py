"""The intake chain for stored mail: parse → rules → workflow, or quarantine.

Pending ``inbound`` rows are claimed with ``FOR UPDATE SKIP LOCKED`` (several
daemons share the work) and processed in batches, one transaction per batch
and a savepoint per message: a message that fails at any stage is quarantined
with the stage and the error, and the rest of the batch goes on.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .clock import Clock
from .config import Config
from .lookup import Lookup
from .models import Inbound, Quarantine
from .parsers import MailTooLarge, ParseOptions, parse_mail
from .rules import Context, decide
from .workflow.intake import Intake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    processed: int = 0
    quarantined: int = 0

    def __add__(self, other: "BatchResult") -> "BatchResult":
        return BatchResult(self.processed + other.processed, self.quarantined + other.quarantined)


class StageError(Exception):
    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage, self.error = stage, error


def parse_options(config: Config) -> ParseOptions:
    limits, support = config.limits, config.support
    return ParseOptions(request_prefix=support.request_prefix,
                        incident_prefix=support.incident_prefix,
                        max_attachment_bytes=limits.max_attachment_bytes,
                        max_attachments=limits.max_attachments,
                        max_message_bytes=limits.max_message_bytes,
                        own_addresses=config.own_addresses)


class Processor:
    """Processes stored mail; ``run_pending`` returns what it did."""

    def __init__(self, config: Config, sessions: sessionmaker[Session], clock: Clock,
                 batch: int = 100) -> None:
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self.batch = batch
        self.options = parse_options(config)

    def run_pending(self) -> BatchResult:
        total = BatchResult()
        while True:
            result = self.run_batch()
            total += result
            if result.processed + result.quarantined < self.batch:
                return total

    def run_batch(self) -> BatchResult:
        processed = quarantined = 0
        with self.sessions.begin() as session:
            rows = session.scalars(
                select(Inbound).where(Inbound.status == "pending").order_by(Inbound.id)
                .limit(self.batch).with_for_update(skip_locked=True)).all()
            for row in rows:
                try:
                    with session.begin_nested():
                        self.process(session, row)
                    processed += 1
                except StageError as exc:
                    self.quarantine(session, row, exc.stage, exc.error)
                    quarantined += 1
        return BatchResult(processed, quarantined)

    def process(self, session: Session, row: Inbound) -> None:
        """One message through the chain; raises :class:`StageError` naming the failing stage."""
        now = self.clock.now()
        try:
            mail = parse_mail(row.raw, self.options)
        except Exception as exc:  # the parser promises not to raise; quarantine if it does
            raise StageError("parse", exc) from exc
        try:
            verdict = decide(mail, Context(self.config, Lookup(session, self.config.timezone), now))
        except Exception as exc:
            raise StageError("rules", exc) from exc
        try:
            Intake(session, self.config, now).apply(row.id, mail, verdict)
            row.status, row.processed_at = "processed", now
            session.flush()
        except Exception as exc:
            raise StageError("workflow", exc) from exc
        log.info("inbound %d from %s: %s", row.id, mail.from_addr, "; ".join(verdict.reasons))

    def quarantine(self, session: Session, row: Inbound, stage: str, error: BaseException) -> None:
        """Keep the raw message with the reason; an operator can retry it later."""
        reason = _describe(error)
        log.warning("inbound %d quarantined at %s: %s", row.id, stage, reason)
        row.status, row.processed_at = "quarantined", self.clock.now()
        existing = session.scalar(select(Quarantine).where(Quarantine.inbound_id == row.id))
        if existing is None:
            session.add(Quarantine(inbound_id=row.id, stage=stage, error=reason))
        else:
            existing.stage, existing.error = stage, reason
            existing.resolved_at = existing.resolution = None
        session.flush()


def _describe(error: BaseException) -> str:
    if isinstance(error, MailTooLarge):
        return f"too large: {error}"
    tail = traceback.format_exception_only(type(error), error)[-1].strip()
    return tail[:2000]
