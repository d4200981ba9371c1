"""Mail hygiene (DESIGN.md §7): loops, automatic mail and acknowledgement storms."""
from __future__ import annotations

import re

from ..outbox import LOOP_HEADER
from ..parsers import MailKind, ParsedMail
from .base import Context, Rule
from .verdict import Action, Role, Verdict

# The local part of a robot's address: one of these words between separators or at its ends
# ("noreply@", "1c-noreply@", "mailer@", "robot.1c@", "bounces+123@"); "robotov.ivan@" is a person.
ROBOT_SENDER = re.compile(
    r"(?:^|[-._+])(?:no-?reply|do-?not-?reply|donotreply|mailer(?:-?daemon)?|mail-?daemon|postmaster"
    r"|bounces?|robot|autoreply|auto-?responder|notifications?|daemon)(?=$|[-._+0-9])", re.I)


class OwnMail(Rule):
    """Mail from the bot's own addresses, or carrying our loop header, is never answered."""

    name = "own-mail"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        own = context.config.own_addresses
        if mail.from_addr in own[:1] or any(v.strip().lower() in own
                                              for v in mail.header_all(LOOP_HEADER)):
            verdict.role = Role.OWN
            verdict.may_auto_reply = False
            verdict.stop(self.name, Action.IGNORE, "our own mail came back")


class AutomaticMail(Rule):
    """Bounces, receipts, auto-replies and bulk mail get no automatic answer (RFC 3834).

    DSNs and MDNs are reports about mail we sent; an auto-reply may join its
    request's trail but never opens a request. Mail from a robot's address (``noreply@``,
    ``1c-noreply@``, ``mailer@``, …) is registered, but nothing automatic answers it.
    """

    name = "automatic-mail"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if mail.kind in (MailKind.DSN, MailKind.MDN):
            verdict.may_auto_reply = False
            verdict.stop(self.name, Action.REPORT, f"{mail.kind.value}: {mail.kind_reason}")
        elif mail.kind is not MailKind.HUMAN:
            verdict.may_auto_reply = False
            verdict.note(self.name, f"{mail.kind.value}: {mail.kind_reason}")
        elif mail.return_path == "":
            verdict.may_auto_reply = False
            verdict.note(self.name, "null return path")
        elif ROBOT_SENDER.search(mail.author.partition("@")[0]):
            verdict.may_auto_reply = False
            verdict.note(self.name, f"automatic sender {mail.author!r}")


class AcknowledgementRateLimit(Rule):
    """At most ``support.ack_limit_per_hour`` automatic mails per sender and hour."""

    name = "ack-rate-limit"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        limit = context.config.support.ack_limit_per_hour
        if verdict.action is not Action.NEW_REQUEST or not verdict.may_auto_reply or not mail.author:
            return  # only a new request is answered automatically
        sent = context.lookup.automatic_replies_last_hour(mail.author, context.now)
        if sent >= limit:
            verdict.may_auto_reply = False
            verdict.note(self.name, f"{sent} automatic mails to {mail.author} in the last hour")


class AutoReplyCap(Rule):
    """At most ``support.unknown_auto_reply_limit_per_hour`` automatic mails per hour to addresses
    that are not registered contacts, all such addresses together (backscatter).

    Forged senders make the bot write to addresses that never wrote to it; the
    per-sender limit does not stop one mail to each of a thousand victims. Past
    the cap the request is still registered, nothing automatic goes out, and
    ТП1 is told once an hour.
    """

    name = "auto-reply-cap"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if not verdict.intake or not verdict.may_auto_reply or not mail.author:
            return
        if verdict.contact is not None and verdict.contact.registered:
            return
        limit = context.config.support.unknown_auto_reply_limit_per_hour
        sent = context.lookup.automatic_to_unregistered_last_hour(context.now)
        if sent >= limit:
            verdict.may_auto_reply, verdict.auto_reply_cap_reached = False, True
            verdict.note(self.name, f"{sent} automatic mails to unregistered addresses in the last "
                         f"hour (limit {limit}): none to {mail.author}")
