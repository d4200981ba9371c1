"""Is a staff mail really from the staff member its ``From:`` names?

``From:`` is written by whoever sends the mail. What our own receiving server
found when it took the mail in is not: its ``Authentication-Results`` (RFC 8601)
and its ``Received`` header stand above everything the sender wrote. So, with
``staff.authentication = "dmarc"`` (the default):

1. The *trusted zone* is the top of the header block, read downwards until the
   first ``Received:`` that was not written entirely inside our network (its
   ``by`` host and every host its ``from`` clause names are in
   ``staff.internal_hosts``). With no internal hosts configured, the zone ends at
   the first ``Received:`` of all. Nothing below the zone is read: anyone can
   write an ``Authentication-Results`` header into the mail they send.
2. In the zone, only ``Authentication-Results`` whose authserv-id is one of
   ``staff.trusted_authserv_id`` count.
3. Among their results (comments are comments, not results), any ``dmarc=fail``
   fails the mail. It passes with ``dmarc=pass`` for the ``From:`` domain, or
   ``dkim=pass`` whose ``header.d``, or ``spf=pass`` whose ``smtp.mailfrom``
   domain, is aligned with it (relaxed: the same organizational domain, by the
   Public Suffix List shipped with ``publicsuffixlist``). A pass for another
   domain (the sender's own) is no pass for ours.
4. Or (``staff.trusted_relays``) the first ``Received:`` below our internal hops
   was written by one of our hosts and names a trusted relay as the client (its
   address, or the reverse-DNS name our host found): every mail that relay
   accepts is trusted.

``staff.authentication = "none"`` trusts ``From:`` alone: for the development
mail server only (``mailbot check`` and the start-up log say so).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from ..config import StaffConfig
from ..parsers import ParsedMail
from ..parsers.trace import Hop, Result, parse_authentication_results, parse_received
from .base import Context, Rule
from .verdict import Action, Role, Untrusted, Verdict


@dataclass(frozen=True)
class Authentication:
    passed: bool
    reason: str  # what passed, or why nothing did (for the log, the event and ТП1)


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped with the package: nothing is downloaded


def domain_of(address: str) -> str:
    """The domain of an address or a bare domain, lower case, IDNA (xn--) form, no trailing dot."""
    domain = address.rpartition("@")[2].strip().strip("<>").rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def organizational_domain(domain: str) -> str:
    """The registrable domain (``mail.tecon.ru`` → ``tecon.ru``); a public suffix stays itself."""
    return _suffixes().privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment: the same organizational domain."""
    return bool(domain) and organizational_domain(domain) == organizational_domain(from_domain)


def _listed(host: str, entries: tuple[str, ...]) -> bool:
    """Is ``host`` (a name or an address) one of ``entries`` (names, addresses, networks)?"""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in entries
    for entry in entries:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _internal(hop: Hop, staff: StaffConfig) -> bool:
    return (_listed(hop.by, staff.internal_hosts)
            and all(_listed(name, staff.internal_hosts) for name in hop.names))


def trusted_zone(mail: ParsedMail, staff: StaffConfig) -> tuple[list[Result], Hop | None]:
    """The results of our authserv-ids above the first foreign ``Received:``, and that hop."""
    results: list[Result] = []
    for name, value in mail.headers:
        name = name.lower()
        if name == "received":
            hop = parse_received(value)
            if not _internal(hop, staff):
                return results, hop
        elif name == "authentication-results":
            parsed = parse_authentication_results(value)
            if parsed is not None and parsed.authserv_id in staff.trusted_authserv_id:
                results.extend(parsed.results)
    return results, None


def authenticate(mail: ParsedMail, staff: StaffConfig) -> Authentication:
    """Does our receiving server vouch for the ``From:`` domain of ``mail``? (See the module.)"""
    from_domain = domain_of(mail.author)
    results, hop = trusted_zone(mail, staff)
    if hop is not None and staff.trusted_relays and _listed(hop.by, staff.internal_hosts):
        relay = next((p for p in hop.peer if _listed(p, staff.trusted_relays)), None)
        if relay:
            return Authentication(True, f"received by {hop.by} from trusted relay {relay}")
    if not staff.trusted_authserv_id:
        return Authentication(False, "no authserv-id is trusted (staff.trusted_authserv_id is empty)")
    if not results:
        below = (f" (the zone ends at the Received by {hop.by or '?'} from "
                 f"{', '.join(hop.names) or '?'}: not all in staff.internal_hosts)") if hop else ""
        return Authentication(False, "no Authentication-Results from "
                              f"{', '.join(staff.trusted_authserv_id)} in the trusted zone{below}")
    seen = ", ".join(f"{r.method}={r.result}" for r in results)
    if any(r.method == "dmarc" and r.result == "fail" for r in results):
        return Authentication(False, f"dmarc=fail ({seen})")
    for r in results:
        if r.result != "pass":
            continue
        if r.method == "dmarc" and domain_of(r.get("header.from")) == from_domain:
            return Authentication(True, f"dmarc=pass for {from_domain}")
        if r.method == "dkim" and aligned(domain_of(r.get("header.d") or r.get("header.i")),
                                          from_domain):
            return Authentication(True, f"dkim=pass aligned with {from_domain}")
        if r.method == "spf" and aligned(domain_of(r.get("smtp.mailfrom")), from_domain):
            return Authentication(True, f"spf=pass aligned with {from_domain}")
    return Authentication(False, f"no pass aligned with {from_domain} ({seen})")


def forged_from(mail: ParsedMail, staff: StaffConfig) -> str:
    """Why our receiving server says the ``From:`` of ``mail`` is forged (its ``dmarc=fail`` in
    the trusted zone), or '' (no verdict of ours, or not a fail)."""
    if not staff.trusted_authserv_id or not mail.author:
        return ""
    results, _ = trusted_zone(mail, staff)
    if any(r.method == "dmarc" and r.result == "fail" for r in results):
        return "dmarc=fail (" + ", ".join(f"{r.method}={r.result}" for r in results) + ")"
    return ""


class SenderForgery(Rule):
    """A customer's mail whose ``From:`` our receiving server found forged (``dmarc=fail``).

    It may not act on a request (``ReplyOwnership`` treats it as a stranger's), and the
    automatic answer to a new request repeats none of its words (the answer goes to the
    address it forged: the real customer must not get the forger's subject from us).
    """

    name = "sender-forgery"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.role is Role.STAFF:
            return
        verdict.forged_sender = forged_from(mail, context.config.staff)
        if verdict.forged_sender:
            verdict.note(self.name, f"From: {mail.author} forged: {verdict.forged_sender}")


class StaffAuthentication(Rule):
    """Staff mail is acted on only when our receiving server vouches for its ``From:`` domain.

    Otherwise (forged, or authentication not configured) nothing in it is
    executed or relayed: it is kept on its request as an unauthenticated note
    and ТП1 is told why (once per sender and hour).
    """

    name = "staff-authentication"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        staff = context.config.staff
        if verdict.role is not Role.STAFF:
            return
        if staff.authentication == "none":
            verdict.note(self.name, "staff.authentication = none: From: alone identifies staff (insecure)")
            return
        result = authenticate(mail, staff)
        if result.passed:
            verdict.note(self.name, f"authenticated: {result.reason}")
            return
        verdict.untrusted, verdict.untrusted_reason = Untrusted.UNAUTHENTICATED_STAFF, result.reason
        verdict.role, verdict.may_auto_reply = Role.UNKNOWN, False
        verdict.stop(self.name, Action.NOTE,
                     f"mail from staff address {mail.author} NOT authenticated: {result.reason}; "
                     "nothing done")
