"""Lenient address-list parsing: RFC 5322 shapes plus the broken ones mailers send."""
from __future__ import annotations

import re
from collections.abc import Sequence

from .headers import clean_text, decode_words

_TOKEN = re.compile(
    r"""
    "(?:[^"\\]|\\.)*"?        # quoted string, maybe unterminated
    | \((?:[^()\\]|\\.)*\)?   # comment (nesting is flattened)
    | <[^<>]*>?               # angle address
    | [,;]                    # list separator (Outlook uses ';')
    | [^\s"(<,;]+             # atom or bare addr-spec
    """,
    re.X | re.S,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
# One RFC 5321 mailbox as we accept it for answering or identifying: a dot-atom local part
# (UTF-8 letters allowed, RFC 6531) and a domain of letter/digit/hyphen labels. No spaces,
# commas, quotes, brackets, colons or controls: nothing that could carry a second address.
_LOCAL = r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_ADDR_SPEC = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})*")
MAX_ADDRESS = 254  # RFC 5321: a path holds at most 256 octets with its angle brackets
_SPACES = re.compile(r"\s+")


def _unquote(token: str) -> str:
    if token.startswith('"'):
        token = token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:]
        return _QUOTED_PAIR.sub(r"\1", token)
    return token


def _display(tokens: Sequence[str]) -> str:
    words = [_unquote(t) for t in tokens if not t.startswith(("(", "<"))]
    return " ".join(w for w in words if w)


def _comment(tokens: Sequence[str]) -> str:
    return " ".join(t.strip("()") for t in tokens if t.startswith("("))


def _mailbox(tokens: list[str], hints: Sequence[str | None]) -> tuple[str, str] | None:
    """(display name, address) of one list item, or None when it holds neither."""
    label = next((i for i, t in enumerate(tokens) if t.endswith(":") and t[0] not in '"<(' and "@" not in t), None)
    if label is not None and not any("@" in t or t[0] == "<" for t in tokens[:label]):
        tokens = tokens[label + 1:]  # group syntax "name: a@b, c@d;"
    angle = next((i for i in range(len(tokens) - 1, -1, -1) if tokens[i].startswith("<")), None)
    if angle is not None:
        addr, name_tokens = tokens[angle].strip("<>").strip(), tokens[:angle]
    else:
        at = next((i for i, t in enumerate(tokens) if "@" in t and not t.startswith(("(", '"'))), None)
        if at is not None:
            addr, name_tokens = tokens[at], tokens[:at]
            if addr.startswith("@") and at and tokens[at - 1].startswith('"'):
                addr, name_tokens = tokens[at - 1] + addr, tokens[: at - 1]
        else:
            atoms = [t for t in tokens if not t.startswith(("(", '"'))]
            quoted = [t for t in tokens if t.startswith('"')]
            if len(atoms) == 1:
                addr, name_tokens = atoms[0], quoted
            elif not atoms and len(quoted) == 1 and "@" in quoted[0]:
                addr, name_tokens = _unquote(quoted[0]), []  # From: "user@host"
            else:
                return None
    name = _display(name_tokens) or _comment(tokens)
    addr = re.sub(r"^mailto:", "", addr.strip(), flags=re.I).strip(",;<>")
    name = _SPACES.sub(" ", clean_text(decode_words(name, hints))).strip().strip("\"'").strip()
    if not addr and not name:
        return None
    return name, addr


def is_valid_address(address: str) -> bool:
    """Whether ``address`` is exactly one plain mailbox (``local@domain``) that mail can go to."""
    return (0 < len(address.encode("utf-8", "surrogateescape")) <= MAX_ADDRESS
            and _ADDR_SPEC.fullmatch(address) is not None)


def parse_addresses(value: str, hints: Sequence[str | None] = ()) -> list[tuple[str, str]]:
    """(display name, address) pairs of an address header, addresses as written."""
    result: list[tuple[str, str]] = []
    item: list[str] = []
    for token in (*_TOKEN.findall(value), ","):
        if token in (",", ";"):
            mailbox = _mailbox(item, hints) if item else None
            if mailbox:
                result.append(mailbox)
            item = []
        else:
            item.append(token)
    return result


def written_addresses(value: str) -> list[str]:
    """Each mailbox of an address header as a strict reader sees it: its address, or '' for an
    item with anything but comments around its one address (``<a@b> c@d``, ``a@b c@d``).

    :func:`parse_addresses` is lenient and keeps the first address of such an item; what
    identifies a sender must not depend on which of two readers (ours, or the receiving
    server that checked the domain) guessed right.
    """
    found: list[str] = []
    item: list[str] = []
    for token in (*_TOKEN.findall(value), ","):
        if token not in (",", ";"):
            item.append(token)
            continue
        if item:
            words = [t for t in item if not t.startswith("(")]
            angle = [i for i, t in enumerate(words) if t.startswith("<")]
            if angle:
                clean = len(angle) == 1 and angle[0] == len(words) - 1 and not any(
                    "@" in t or t.endswith(":") for t in words[:-1] if not t.startswith('"'))
                found.append(words[-1].strip("<>").strip() if clean else "")
            else:
                found.append(words[0] if len(words) == 1 else "")
        item = []
    return found


def address_list(values: Sequence[str], hints: Sequence[str | None] = ()) -> tuple[str, ...]:
    """Lower-cased addresses (those with an '@') from several header values, without repeats."""
    found: dict[str, None] = {}
    for value in values:
        for _, addr in parse_addresses(value, hints):
            if "@" in addr:
                found.setdefault(addr.lower(), None)
    return tuple(found)


def first_mailbox(values: Sequence[str], hints: Sequence[str | None] = ()) -> tuple[str, str]:
    """(name, lower-cased address) of the first usable mailbox, preferring ones with an '@'."""
    fallback: tuple[str, str] | None = None
    for value in values:
        for name, addr in parse_addresses(value, hints):
            if "@" in addr:
                return name, addr.lower()
            fallback = fallback or (name, addr.lower())
    return fallback or ("", "")
