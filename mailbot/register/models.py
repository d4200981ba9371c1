"""SQLAlchemy models mirroring ``schema.sql`` (tests/test_schema.py checks they match)."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Computed,
    Date,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime

REGISTERED_SOURCES = ("crm", "staff")  # contacts.source values that may act for their organisation


class Base(DeclarativeBase):
    # Server defaults are not read back after an INSERT (code sets what it reads), so a
    # flush writes each table's rows with one executemany (see db._assign_ids).
    __mapper_args__ = {"eager_defaults": False}
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        str: Text,
        int: BigInteger,
        bool: Boolean,
        date: Date,
        bytes: LargeBinary,
        list[str]: ARRAY(Text),
        dict[str, Any]: JSONB,
    }


def _pk() -> Mapped[int]:
    return mapped_column(BigInteger, primary_key=True)


def _now() -> Mapped[datetime]:
    return mapped_column(server_default=func.now())


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = _now()


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[int] = _pk()
    name: Mapped[str]
    aliases: Mapped[list[str]] = mapped_column(server_default="{}")
    email_domains: Mapped[list[str]] = mapped_column(server_default="{}")
    crm_id: Mapped[str | None] = mapped_column(unique=True)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = _pk()
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    full_name: Mapped[str] = mapped_column(server_default="")
    email: Mapped[str] = mapped_column(unique=True)
    phone: Mapped[str | None]
    source: Mapped[str] = mapped_column(server_default="mail")  # crm, staff or mail
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    @property
    def registered(self) -> bool:
        """Vouched for by the CRM or by staff, not only by what the sender wrote."""
        return self.source in REGISTERED_SOURCES


class SupportContract(Base):
    __tablename__ = "support_contracts"
    id: Mapped[int] = _pk()
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    number: Mapped[str] = mapped_column(server_default="")
    valid_from: Mapped[date]
    valid_to: Mapped[date]


class Staff(Base):
    __tablename__ = "staff"
    id: Mapped[int] = _pk()
    login: Mapped[str] = mapped_column(unique=True)
    full_name: Mapped[str]
    email: Mapped[str] = mapped_column(unique=True)
    tier: Mapped[str]
    department: Mapped[str] = mapped_column(server_default="")
    qualification: Mapped[str] = mapped_column(server_default="")
    experience_years: Mapped[int] = mapped_column(Integer, server_default="0")
    supervisor_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    active: Mapped[bool] = mapped_column(server_default="true")
    created_at: Mapped[datetime] = _now()


class Incident(Base):
    __tablename__ = "incidents"
    id: Mapped[int] = _pk()
    number: Mapped[str] = mapped_column(unique=True)
    title: Mapped[str]
    symptoms: Mapped[str] = mapped_column(server_default="")
    solution: Mapped[str] = mapped_column(server_default="")
    product: Mapped[str] = mapped_column(server_default="")
    version: Mapped[str] = mapped_column(server_default="")
    status: Mapped[str] = mapped_column(server_default="new")
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    search: Mapped[Any | None] = mapped_column(TSVECTOR, Computed(
        "setweight(to_tsvector('russian', kb_text(title)), 'A')"
        " || setweight(to_tsvector('russian', kb_text(symptoms)), 'B')"
        " || setweight(to_tsvector('russian', kb_text(solution)), 'C')"
        " || setweight(to_tsvector('russian', kb_text(product || ' ' || version)), 'D')"))


class IncidentTerm(Base):
    """A word of the known-error database and how many incidents hold it (kept by triggers)."""

    __tablename__ = "incident_terms"
    lexeme: Mapped[str] = mapped_column(primary_key=True)
    ndoc: Mapped[int] = mapped_column(Integer)


class IncidentTitleWord(Base):
    """A lexeme of an incident's title (kept by triggers): a long text's candidates come from here."""

    __tablename__ = "incident_title_words"
    lexeme: Mapped[str] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(primary_key=True)


class IncidentHistory(Base):
    """One change of an incident: who, when, what (``changes``: field → [old, new])."""

    __tablename__ = "incident_history"
    id: Mapped[int] = _pk()
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    at: Mapped[datetime]
    actor: Mapped[str]
    kind: Mapped[str]
    changes: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))

    request: Mapped[Request | None] = relationship()
    message: Mapped[Message | None] = relationship()


class RequestCounter(Base):
    __tablename__ = "request_counters"
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, server_default="0")


class Request(Base):
    __tablename__ = "requests"
    id: Mapped[int] = _pk()
    number: Mapped[str] = mapped_column(unique=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    requester_email: Mapped[str] = mapped_column(server_default="")
    requester_name: Mapped[str] = mapped_column(server_default="")
    channel: Mapped[str] = mapped_column(server_default="email")
    subject: Mapped[str] = mapped_column(server_default="")
    level: Mapped[int | None] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(server_default="new")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    follows_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))  # a follow-up's
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    thread_message_id: Mapped[str | None]
    received_at: Mapped[datetime]
    first_reaction_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    confirmation: Mapped[str] = mapped_column(server_default="none")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    opened_at: Mapped[datetime | None]  # the reaction clock started (after the intake)
    waiting_since: Mapped[datetime | None]  # the customer waits for a human reaction since
    language: Mapped[str] = mapped_column(server_default="ru")  # of the customer's automatic mail

    contact: Mapped[Contact | None] = relationship()


class Inbound(Base):
    __tablename__ = "inbound"
    id: Mapped[int] = _pk()
    dedup_key: Mapped[str] = mapped_column(unique=True)
    source: Mapped[str]
    mailbox: Mapped[str] = mapped_column(server_default="support")  # support or tp2
    uid: Mapped[int | None]
    raw: Mapped[bytes] = mapped_column(deferred=True)  # big: read alone, by a binary cursor
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(server_default="pending")
    received_at: Mapped[datetime] = _now()
    processed_at: Mapped[datetime | None]
    thread_keys: Mapped[list[str]] = mapped_column(server_default="{}")


class Quarantine(Base):
    __tablename__ = "quarantine"
    id: Mapped[int] = _pk()
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound.id"), unique=True)
    stage: Mapped[str]
    error: Mapped[str]
    created_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None]


class MailboxState(Base):
    __tablename__ = "mailbox_state"
    mailbox: Mapped[str] = mapped_column(primary_key=True)
    uidvalidity: Mapped[int]
    last_uid: Mapped[int] = mapped_column(server_default="0")
    updated_at: Mapped[datetime] = _now()


class Outbox(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = _pk()
    message_id: Mapped[str] = mapped_column(unique=True)
    kind: Mapped[str]
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    mail_from: Mapped[str]
    recipients: Mapped[list[str]]
    raw: Mapped[bytes] = mapped_column(deferred=True)  # big: read alone, by a binary cursor
    status: Mapped[str] = mapped_column(server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    last_error: Mapped[str | None]
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None]
    claimed_by: Mapped[int | None]  # the sending daemon's lock key (transport/claims.py)

    request: Mapped[Request | None] = relationship()
    files: Mapped[list[OutboxFile]] = relationship(order_by="OutboxFile.id")


class UndeliverableAddress(Base):
    """An address our mail cannot reach (refused by our SMTP server, or bounced for good): no
    automatic mail goes to it until a delivery succeeds or staff clear the mark."""

    __tablename__ = "undeliverable_addresses"
    address: Mapped[str] = mapped_column(primary_key=True)
    reply: Mapped[str]
    refused_at: Mapped[datetime] = _now()
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    source: Mapped[str] = mapped_column(server_default="smtp")  # 'smtp' or 'dsn'



class OutboxFile(Base):
    """A stored file that goes with an outgoing mail: spliced into its raw text when sent."""

    __tablename__ = "outbox_files"
    id: Mapped[int] = _pk()
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"))
    attachment_id: Mapped[int] = mapped_column(ForeignKey("attachments.id"))
    placeholder: Mapped[str]

    attachment: Mapped[AttachmentRow] = relationship()


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = _pk()
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    direction: Mapped[str]
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound.id"), unique=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), unique=True)
    message_id: Mapped[str | None]
    in_reply_to: Mapped[str | None]
    kind: Mapped[str] = mapped_column(server_default="human")
    sender: Mapped[str] = mapped_column(server_default="")
    recipients: Mapped[list[str]] = mapped_column(server_default="{}")
    subject: Mapped[str] = mapped_column(server_default="")
    body: Mapped[str] = mapped_column(server_default="")
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()

    request: Mapped[Request | None] = relationship()
    outbox: Mapped[Outbox | None] = relationship()
    attachments: Mapped[list[AttachmentRow]] = relationship(
        back_populates="message", order_by="AttachmentRow.id")


class StoredFile(Base):
    """A decoded file of mail stored by version 5, once per content (see :mod:`mailbot.register.files`)."""

    __tablename__ = "files"
    sha256: Mapped[str] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(deferred=True)  # big: read with files.read
    stored_at: Mapped[datetime] = _now()


class AttachmentRow(Base):
    """A file of a message: its name and type there; where its bytes are: :mod:`mailbot.register.files`."""

    __tablename__ = "attachments"
    id: Mapped[int] = _pk()
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    filename: Mapped[str]  # safe on any file system
    original_filename: Mapped[str | None]  # as the mail named it, when it did
    content_type: Mapped[str]
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str]
    inline: Mapped[bool] = mapped_column(server_default="false")
    part_start: Mapped[int | None] = mapped_column(BigInteger)  # its encoded body in the raw mail
    part_end: Mapped[int | None] = mapped_column(BigInteger)
    part_encoding: Mapped[str | None]

    message: Mapped[Message] = relationship(back_populates="attachments")


class Delivery(Base):
    """A mail that carried files to a customer (ОП2), waiting for its confirmation."""

    __tablename__ = "deliveries"
    id: Mapped[int] = _pk()
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    recipient: Mapped[str]
    files: Mapped[list[str]] = mapped_column(server_default="{}")
    status: Mapped[str] = mapped_column(server_default="sent")
    confirmed_by: Mapped[str | None]
    confirmed_at: Mapped[datetime | None]
    failure: Mapped[str | None]
    settled_at: Mapped[datetime | None]
    settled_by: Mapped[str | None]
    settled_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    note: Mapped[str | None]
    reminders: Mapped[int] = mapped_column(Integer, server_default="0")
    reminded_at: Mapped[datetime | None]
    staff_told_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()
    request: Mapped[Request] = relationship()
    outbox: Mapped[Outbox | None] = relationship()
    settled_message: Mapped[Message | None] = relationship()


class FileRequest(Base):
    """Files asked of a customer (logs, screenshots): the request waits for them."""

    __tablename__ = "file_requests"
    id: Mapped[int] = _pk()
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    asked: Mapped[str]
    asked_by: Mapped[str]
    status: Mapped[str] = mapped_column(server_default="waiting")
    reminders: Mapped[int] = mapped_column(Integer, server_default="0")
    reminded_at: Mapped[datetime | None]
    staff_told_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]
    received_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[datetime] = _now()
    request: Mapped[Request] = relationship()
    received_message: Mapped[Message | None] = relationship()


class Escalation(Base):
    __tablename__ = "escalations"
    id: Mapped[int] = _pk()
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    subject: Mapped[str]
    status: Mapped[str] = mapped_column(server_default="sent")
    sent_at: Mapped[datetime]
    due_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    result_sent_at: Mapped[datetime | None]
    escalated_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))

    request: Mapped[Request] = relationship()


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = _pk()
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    at: Mapped[datetime]
    actor: Mapped[str]
    kind: Mapped[str]
    from_status: Mapped[str | None]
    to_status: Mapped[str | None]
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    details: Mapped[dict[str, Any]] = mapped_column(server_default="{}")

    request: Mapped[Request | None] = relationship()
    message: Mapped[Message | None] = relationship()


class SlaStep(Base):
    """A step of an SLA clock's ladder, taken once per request, clock and cycle (its deadline)."""

    __tablename__ = "sla_steps"
    __table_args__ = (UniqueConstraint("request_id", "clock", "cycle", "step"),)
    id: Mapped[int] = _pk()
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    clock: Mapped[str]  # reaction, op4_answer, delivery, confirmation, contact_info
    cycle: Mapped[datetime]  # the deadline the step was counted against
    started_at: Mapped[datetime]  # when the clock of this cycle started
    step: Mapped[str]  # warning, reminder, breach, escalation
    at: Mapped[datetime]
    recipients: Mapped[list[str]] = mapped_column(server_default="{}")


class SlaDigest(Base):
    """A digest slot (a configured time on a working day) that has been taken care of."""

    __tablename__ = "sla_digests"
    slot: Mapped[datetime] = mapped_column(primary_key=True)
    sent_at: Mapped[datetime]
    mails: Mapped[int] = mapped_column(Integer, server_default="0")


class WebLoginLink(Base):
    """A one-time login link mailed to a staff address (the token only as its SHA-256)."""

    __tablename__ = "web_login_links"
    id: Mapped[int] = _pk()
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    token_hash: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class WebLoginAttempt(Base):
    """A request for a login link (registered address or not): the rate limits count these."""

    __tablename__ = "web_login_attempts"
    id: Mapped[int] = _pk()
    address: Mapped[str]
    client: Mapped[str]
    at: Mapped[datetime]


class WebSession(Base):
    """A browser's session on the board (the cookie's token only as its SHA-256)."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = _pk()
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    token_hash: Mapped[str] = mapped_column(unique=True)
    client: Mapped[str] = mapped_column(server_default="")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
