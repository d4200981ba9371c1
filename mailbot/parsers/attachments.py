"""Attachments: safe file names and the limits on count and size."""
from __future__ import annotations

import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field

from .model import Attachment, MailTooLarge, ParseOptions

MAX_NAME_BYTES = 200
MAX_ORIGINAL_CHARS = 1000
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f-\x9f/\\<>:"|?*]')
_WINDOWS_RESERVED = re.compile(r"^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(?:\..*)?$", re.I)
_DEFAULT_NAMES = {
    "message/rfc822": "message.eml",
    "message/delivery-status": "delivery-status.txt",
    "message/disposition-notification": "disposition-notification.txt",
    "text/rfc822-headers": "rfc822-headers.txt",
    "application/ms-tnef": "winmail.dat",
}
_EXTENSIONS = {"text/plain": ".txt", "image/jpeg": ".jpg", "application/octet-stream": ".bin"}


def _extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type, strict=False) or ".bin"


def _cap(name: str) -> str:
    """Shorten a name to MAX_NAME_BYTES of UTF-8, keeping a short extension."""
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        stem, ext = name, ""
    suffix = "." + ext if ext else ""
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    return stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .") + suffix


def safe_filename(name: str | None, index: int, content_type: str = "application/octet-stream") -> str:
    """A file name safe on any file system; `attachment-N.ext` when there is nothing usable."""
    cleaned = unicodedata.normalize("NFC", name or "")
    cleaned = "".join(ch for ch in cleaned if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    cleaned = _UNSAFE_CHARS.sub("_", cleaned)
    cleaned = re.sub(r"\s+", " ", cleaned).strip(" .")
    if _WINDOWS_RESERVED.match(cleaned):
        cleaned = "_" + cleaned
    if not cleaned.strip("_ "):
        return f"attachment-{index}{_extension(content_type)}"
    return _cap(cleaned)


def original_name(name: str | None) -> str | None:
    """The name as the mail gave it, for staff to see (shown through ``visible``): only NUL
    characters (which PostgreSQL text cannot hold) go, and the length is capped."""
    if not name:
        return None
    return name.replace("\x00", "")[:MAX_ORIGINAL_CHARS] or None


def default_name(content_type: str) -> str | None:
    """The conventional name of a report part or TNEF blob, if it has one."""
    return _DEFAULT_NAMES.get(content_type)


@dataclass
class AttachmentSink:
    """Collects attachments in order and enforces ParseOptions limits (raises MailTooLarge)."""

    options: ParseOptions
    items: list[Attachment] = field(default_factory=list)

    def check_size(self, size: int, name: str) -> None:
        """Refuse one attachment over the size limit, before or after decoding it."""
        if size > self.options.max_attachment_bytes:
            raise MailTooLarge(f"attachment {name!r} has {size} bytes, limit {self.options.max_attachment_bytes}")

    def add(self, name: str | None, content_type: str, data: bytes,
            content_id: str | None = None, inline: bool = False,
            span: tuple[int, int, str] | None = None) -> Attachment:
        """Append one attachment with a safe name; raise MailTooLarge over the limits."""
        index = len(self.items) + 1
        filename = safe_filename(name or default_name(content_type), index, content_type)
        self.check_size(len(data), filename)
        if index > self.options.max_attachments:
            raise MailTooLarge(f"more than {self.options.max_attachments} attachments")
        attachment = Attachment(filename=filename, content_type=content_type, data=data,
                                content_id=content_id or None, inline=inline,
                                original_name=original_name(name), span=span)
        self.items.append(attachment)
        return attachment
