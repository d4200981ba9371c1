"""Parsers: raw message bytes to one immutable :class:`ParsedMail` (see DESIGN.md §3 item 2)."""
from .attachments import safe_filename
from .model import (
    Attachment,
    DsnRecipient,
    DsnReport,
    MailKind,
    MailTooLarge,
    MdnReport,
    ParsedMail,
    ParseOptions,
)
from .numbers import find_incident_numbers, find_request_numbers
from .parse import parse_mail

__all__ = [
    "Attachment",
    "DsnRecipient",
    "DsnReport",
    "MailKind",
    "MailTooLarge",
    "MdnReport",
    "ParseOptions",
    "ParsedMail",
    "find_incident_numbers",
    "find_request_numbers",
    "parse_mail",
    "safe_filename",
]
