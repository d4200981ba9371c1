"""Trace headers: who handed a message to whom (``Received:``, RFC 5321 §4.4) and what the
receiving servers found when they checked it (``Authentication-Results:``, RFC 8601).

These only parse; which of them may be believed is decided in
:mod:`mailbot.rules.authentication`. ``Authentication-Results`` are read with the
maintained ``authres`` package (comments are comments, not results); ``Received``
has no machine grammar worth the name, so :func:`parse_received` reads the clauses
every MTA writes (``from … by … with … id … for …``) and keeps what names hosts.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import authres

_CLAUSES = frozenset({"from", "by", "via", "with", "id", "for"})
_HOST = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*\.?$")
_LITERAL = re.compile(r"^\[(?:ipv6:)?([0-9a-f:.]+)\]$")


@dataclass(frozen=True)
class Hop:
    """One ``Received:`` header: the host that wrote it, and the peer it names.

    ``names`` are every host name and address the ``from`` clause holds (the name
    the client claimed and what the receiving host found); ``peer`` only what the
    receiving host found itself: the client's address and its reverse-DNS name.
    """

    by: str
    names: tuple[str, ...]
    peer: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    """One result of an ``Authentication-Results`` header, e.g. ``dkim=pass header.d=x.ru``."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...]  # ("header.d", "x.ru"), ("smtp.mailfrom", "a@x.ru")

    def get(self, name: str) -> str:
        return next((value for key, value in self.properties if key == name), "")


@dataclass(frozen=True)
class AuthenticationResults:
    authserv_id: str  # lower-cased
    results: tuple[Result, ...]


def parse_authentication_results(value: str) -> AuthenticationResults | None:
    """The results of one header, or None when it does not parse (it then says nothing)."""
    try:
        header = authres.AuthenticationResultsHeader.parse_value(value)
    except (authres.AuthResError, ValueError, TypeError, AttributeError):
        return None
    results = tuple(
        Result(str(r.method).lower(), str(r.result).lower(),
               tuple((f"{p.type}.{p.name}".lower(), str(p.value or "").strip().lower())
                     for p in r.properties))
        for r in header.results)
    return AuthenticationResults(str(header.authserv_id or "").lower(), results)


def normalize_host(text: str) -> str:
    """A host name (lower case, no trailing dot) or an IP address in its canonical form; ''
    for anything else."""
    text = text.strip().lower()
    literal = _LITERAL.match(text)
    candidate = literal.group(1) if literal else text
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    if literal or not _HOST.match(text):
        return ""
    return text.rstrip(".")


def parse_received(value: str) -> Hop:
    """The ``by`` host and the hosts the ``from`` clause of one ``Received:`` value names.

    Read: the first word of the clause (the name the client claimed, or its address
    literal), ``helo=NAME`` (Exim), and in comments each address literal with the
    host name just before it (the reverse-DNS name the receiving server found,
    Postfix and Sendmail: ``(name [192.0.2.1])``). Other comments (TLS details,
    "may be forged") are ignored.
    """
    clauses = _clauses(value.rpartition(";")[0] if ";" in value else value)
    by = next(iter(clauses.get("by", ())), ("", False))[0]
    names: list[str] = []
    peer: list[str] = []
    previous = ""
    for position, (word, in_comment) in enumerate(clauses.get("from", ())):
        literal = _LITERAL.match(word)
        if position == 0 or word.startswith("helo="):
            names.append(normalize_host(word.removeprefix("helo=")) or word)
            if literal:
                peer.append(normalize_host(word))
        elif in_comment and literal and normalize_host(word):
            peer.append(normalize_host(word))
            if previous and previous != "unknown":
                peer.append(previous)
        previous = normalize_host(word) if in_comment and not literal else ""
    names += peer
    return Hop(normalize_host(by), tuple(dict.fromkeys(names)), tuple(dict.fromkeys(peer)))


def _clauses(text: str) -> dict[str, list[tuple[str, bool]]]:
    """The words of each clause, each with whether it stood in a comment (nested comments flattened)."""
    clauses: dict[str, list[tuple[str, bool]]] = {}
    current: list[tuple[str, bool]] | None = None
    depth, word = 0, []

    def flush() -> None:
        nonlocal current
        token = "".join(word).strip().lower()
        word.clear()
        if not token:
            return
        if depth == 0 and token in _CLAUSES and token not in clauses:
            current = clauses.setdefault(token, [])
        elif current is not None:
            current.append((token, depth > 0))

    for char in text:
        if char in "()":
            flush()
            depth = max(0, depth + (1 if char == "(" else -1))
        elif char.isspace():
            flush()
        else:
            word.append(char)
    flush()
    return clauses
