"""The one immutable result of parsing a raw message: :class:`ParsedMail`."""
from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property

from .addresses import is_valid_address


class MailKind(str, enum.Enum):
    """What kind of message this is, decided before any workflow step."""

    HUMAN = "human"
    AUTO_REPLY = "auto_reply"  # RFC 3834 auto-reply, out-of-office, vacation
    DSN = "dsn"  # RFC 3464 delivery status notification (bounce, delay)
    MDN = "mdn"  # RFC 8098 message disposition notification (read receipt)
    BULK = "bulk"  # mailing list, Precedence bulk/list/junk, newsletters


@dataclass(frozen=True)
class Attachment:
    """One attachment, decoded to its real bytes, with a safe file name (``filename``, used on
    disk and in our mail) and the name its mail gave it (``original_name``, shown to staff).

    The bytes stay in the raw mail (:mod:`mailbot.register.files`): :meth:`kept` gives the
    same attachment without them (``data`` is None; ``size`` and ``sha256`` still
    say what they were), to hand on without carrying them.
    """

    filename: str
    content_type: str
    data: bytes | None
    content_id: str | None = None
    inline: bool = False
    kept_as: tuple[int, str] | None = None  # (size, sha256) once handed on without data
    original_name: str | None = None  # the name the mail gave it, decoded (None: it gave none)
    # where its encoded body lies in the raw mail: (start, end, transfer encoding); None when
    # it is not one slice of it (a file from winmail.dat, a nested message, uuencoded)
    span: tuple[int, int, str] | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.kept_as[0]

    @cached_property
    def sha256(self) -> str:
        """The hex SHA-256 of the data (computed once, and pickled with the attachment)."""
        if self.data is None:
            return self.kept_as[1]
        return hashlib.sha256(self.data).hexdigest()

    def kept(self) -> Attachment:
        """This attachment without its bytes, which its raw mail holds."""
        return replace(self, data=None, kept_as=(self.size, self.sha256))


@dataclass(frozen=True)
class DsnRecipient:
    """One failed (or delayed) recipient of a bounce."""

    address: str
    status: str | None  # e.g. "5.1.1"
    action: str | None  # failed, delayed, delivered, relayed, expanded
    diagnostic: str | None  # Diagnostic-Code or the bounce text's reason

    @property
    def permanent(self) -> bool:
        return bool(self.status) and self.status.startswith("5")


@dataclass(frozen=True)
class DsnReport:
    """A bounce: which of our messages failed, for whom, and why."""

    original_message_id: str | None
    recipients: tuple[DsnRecipient, ...]


@dataclass(frozen=True)
class MdnReport:
    """A read receipt: which of our messages was displayed/processed."""

    original_message_id: str | None
    disposition: str  # e.g. "displayed", "processed", "deleted"
    final_recipient: str | None


@dataclass(frozen=True)
class ParsedMail:
    """Everything the rules need from one message; never raises on access."""

    message_id: str | None  # without angle brackets
    in_reply_to: tuple[str, ...]  # Message-IDs, without angle brackets
    references: tuple[str, ...]
    subject: str
    from_addr: str  # lower-cased address, '' when there is none
    from_name: str
    reply_to: str | None
    to: tuple[str, ...]  # lower-cased addresses
    cc: tuple[str, ...]
    date: datetime | None  # timezone-aware
    return_path: str | None  # None when absent, '' for the null sender <>
    text: str  # the whole text body (plain part, or clean text from HTML)
    html: str | None  # the HTML part as sent, never rendered unescaped
    new_text: str  # the new text of a reply: no quoted history, no signature
    attachments: tuple[Attachment, ...]
    kind: MailKind
    kind_reason: str  # why `kind` was chosen, e.g. "Auto-Submitted: auto-replied"
    request_numbers: tuple[str, ...]  # in the subject, normalised, e.g. "ТП-2026-000123"
    incident_numbers: tuple[str, ...]  # in the subject, normalised, e.g. "INC-000045"
    dsn: DsnReport | None = None
    mdn: MdnReport | None = None
    headers: tuple[tuple[str, str], ...] = ()  # all headers, decoded, in order
    defects: tuple[str, ...] = ()  # what was wrong with the input and repaired
    size: int = 0  # raw size in bytes
    from_header: tuple[str, ...] = ()  # every mailbox of From: (lower-cased; '' for an ambiguous one)
    forwarded: bool = False  # the mail forwards another one (subject "Fwd:", a forward's separator)

    @property
    def author(self) -> str:
        """The one valid address of the From: header; '' when From: holds none, several, or
        one that is not a plain mailbox. Who wrote the mail as far as its headers tell: never
        Sender: or Reply-To:, which anyone may set to anything."""
        if len(self.from_header) != 1 or not is_valid_address(self.from_header[0]):
            return ""
        return self.from_header[0]

    def header(self, name: str) -> str | None:
        """The first header with this name (case-insensitive), or None."""
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    def header_all(self, name: str) -> tuple[str, ...]:
        lname = name.lower()
        return tuple(v for k, v in self.headers if k.lower() == lname)

    @property
    def content(self) -> str:
        """What the sender brings us: the new text, and the mail forwarded when it is a forward
        (an operator's report sent on by a colleague is the problem, not history)."""
        return self.text if self.forwarded and self.text.strip() else (self.new_text or self.text)

    @property
    def problem(self) -> str:
        """What the mail says of the problem: its subject and content (for the level and the
        known-error search): a forward is read whole, what it forwards is the problem."""
        return f"{self.subject}\n{self.content}"

    @property
    def language(self) -> str:
        """'en' when the sender's own words (the subject and what the mail brings) hold Latin
        letters and no Cyrillic ones, else 'ru': the language our automatic mail answers in."""
        words = _NUMBER.sub("", f"{self.subject}\n{self.content}")  # "[ТП-2026-000123]" is no word
        return "en" if _LATIN.search(words) and not _CYRILLIC.search(words) else "ru"

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this message refers to, nearest first."""
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            seen.setdefault(mid, None)
        return tuple(seen)


_LATIN = re.compile(r"[A-Za-z]{2}")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_NUMBER = re.compile(r"[\u0400-\u04ffA-Za-z]+-\d{4}-\d+")


@dataclass(frozen=True)
class ParseOptions:
    """Knobs from config that the parser needs."""

    request_prefix: str = "ТП"
    incident_prefix: str = "INC"
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_attachments: int = 50
    max_message_bytes: int = 50 * 1024 * 1024
    own_addresses: tuple[str, ...] = field(default=())


class MailTooLarge(ValueError):
    """The message or one of its attachments exceeds a configured limit."""
