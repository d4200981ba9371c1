"""Parsers: raw message bytes to one immutable :class:`ParsedMail` (see DESIGN.md §3 item 2).

The names below are imported when first asked for (PEP 562): a command line that only shows
text (``parsers.visible``) does not load the MIME parser and its libraries.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Attachment": "model", "DsnRecipient": "model", "DsnReport": "model", "MailKind": "model",
    "MailTooLarge": "model", "MdnReport": "model", "ParsedMail": "model", "ParseOptions": "model",
    "find_incident_numbers": "numbers", "find_request_numbers": "numbers", "parse_mail": "parse",
    "safe_filename": "attachments",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_WHERE)
