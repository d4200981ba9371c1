"""ОП2 steps (regulation §3): files sent with confirmed delivery, and files asked of customers.

«ОП2 требует обязательного подтверждения доставки»: every mail that carries
files to a customer is a delivery (:meth:`Workflow.tell_customer`). It is
confirmed by a read receipt ('displayed') from the recipient, by the customer's
reply ("файлы получили") or by staff (``#доставлено …``); it fails on a bounce, a
refusal, a receipt 'deleted'/'failed' or the customer's "не получили", and the
assignee is told at once. Unconfirmed, the customer is reminded
``delivery.max_reminders`` times, then the assignee is told. An answered ОП2
request closes once its files are confirmed (``delivery.close_on_confirmation``).

Files asked of the customer (``#запросить логи, скриншот``) are awaited the same
way: reminded, and their arrival is noted for the assignee.

Every step is an event on the request's timeline, in the caller's transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from ..parsers import ParsedMail
from ..register.models import AttachmentRow, Delivery, FileRequest, Message, Outbox, Request, Staff
from ..register.status import Status
from .actions import Workflow
from .deliveries import confirm, fail, stored, unsettled, waiting_file_requests
from .states import record

ANSWERED = (Status.AWAITING_CUSTOMER.value, Status.RESOLVED.value)
DONE = (Status.CLOSED.value, Status.REJECTED.value)
# where files may be sent (#файлы) or asked for (#запросить)
FILES_FROM = (Status.OPEN, Status.AWAITING_CUSTOMER, Status.RESOLVED, Status.ESCALATED_OP4)
MDN_CONFIRMS = ("displayed",)  # RFC 8098: shown to the recipient
MDN_FAILS = ("deleted", "failed")  # deleted unseen; "failed" of RFC 2298


@dataclass
class Op2:
    """The ОП2 steps on the register, through one :class:`Workflow` (one moment, one transaction)."""

    flow: Workflow

    # ------------------------------------------------------------ files to and from the customer

    def send_files(self, request: Request, staff: Staff, text: str,
                   files: tuple[AttachmentRow, ...], description: str = "") -> None:
        """``#файлы``: the files with the standard text (and the staff member's, if any)."""
        self.flow.answer(request, staff, text, files, template="files", description=description)

    def ask_for_files(self, request: Request, staff: Staff, asked: str, text: str,
                      files: tuple[AttachmentRow, ...], message: Message | None) -> None:
        """``#запросить логи, скриншот``: the customer is asked; the request waits for the files.

        Asking for files (diagnostics) is ОП2 work (regulation §3): an ОП1 request becomes ОП2.
        """
        flow = self.flow
        flow.session.add(FileRequest(request=request, asked=asked, asked_by=staff.login,
                                     status="waiting", reminders=0, created_at=flow.now))
        record(flow.session, request, "files_requested", actor=staff.login, at=flow.now,
               message=message, asked=asked)
        if request.level == 1:
            flow.set_level(request, 2, staff.login)
        flow.answer(request, staff, text, files, template="files_request", asked=asked)

    def files_arrived(self, request: Request, mail: ParsedMail,
                      message: Message) -> list[FileRequest]:
        """A customer's mail that brings files while the request waits for some receives them.

        Which files answer which request is the assignee's judgement (they are
        told): every waiting request is received. Inline images count only from
        ``delivery.inline_file_min_bytes`` (a pasted screenshot, not a logo).
        """
        if not self.brings_files(mail):
            return []
        waiting = waiting_file_requests(self.flow.session, request)
        names = [a.filename for a in mail.attachments]
        for asked in waiting:
            asked.status, asked.received_at, asked.received_message = "received", self.flow.now, message
            record(self.flow.session, request, "files_received", actor=mail.author, at=self.flow.now,
                   message=message, asked=asked.asked, files=names)
        return waiting

    def brings_files(self, mail: ParsedMail) -> bool:
        least = self.flow.config.delivery.inline_file_min_bytes
        return any(not a.inline or (a.content_type.startswith("image/") and a.size >= least)
                   for a in mail.attachments)

    # ------------------------------------------------------------ confirmations and failures

    def confirm(self, request: Request, deliveries: Sequence[Delivery], how: str, *, by: str,
                message: Message | None, note: str | None = None) -> list[Delivery]:
        """Confirm ``deliveries`` (``how``: mdn, reply, staff) and record it."""
        for delivery in deliveries:
            confirm(delivery, how, at=self.flow.now, by=by, message=message, note=note)
            record(self.flow.session, request, "delivery_confirmed", actor=by, at=self.flow.now,
                   message=message, how=how, files=delivery.files, to=delivery.recipient,
                   **({"note": note} if note else {}))
        return list(deliveries)

    def confirm_all(self, request: Request, how: str, *, by: str, message: Message | None,
                    note: str | None = None) -> list[Delivery]:
        """The customer (or staff for them) says the files arrived: every delivery holding the
        request up is confirmed, failed ones too (the customer has the files after all)."""
        return self.confirm(request, stored(unsettled(self.flow.session, request)), how, by=by,
                            message=message, note=note)

    def not_received(self, request: Request, *, by: str, message: Message,
                     words: str) -> list[Delivery]:
        """The customer says the files did not arrive (or do not open): waiting deliveries fail."""
        waiting = [d for d in stored(unsettled(self.flow.session, request)) if d.status == "sent"]
        return self.failed(request, waiting, f"{by}: {' '.join(words.split())[:300]}", by=by,
                           message=message)

    def failed(self, request: Request | None, deliveries: Sequence[Delivery], failure: str, *,
               by: str, message: Message | None) -> list[Delivery]:
        """Mark ``deliveries`` failed and record it (the caller tells the assignee)."""
        for delivery in deliveries:
            fail(delivery, failure, at=self.flow.now, by=by, message=message)
            record(self.flow.session, request, "delivery_failed", actor=by, at=self.flow.now,
                   message=message, files=delivery.files, to=delivery.recipient, failure=failure)
        return list(deliveries)

    def close_if_done(self, request: Request, *, by: str, message: Message | None,
                      tell: bool = True) -> bool:
        """§3, "получение подтверждения о приеме/доставке; закрытие запроса": an answered ОП2
        request whose files are all confirmed, waiting for no files of the customer, closes
        (``delivery.close_on_confirmation``), and the assignee is told (the customer too,
        unless ``tell`` is False: a follow-up's acknowledgement says it)."""
        flow = self.flow
        if not (flow.config.delivery.close_on_confirmation and request.level == 2
                and request.status in ANSWERED):
            return False
        if unsettled(flow.session, request) or waiting_file_requests(flow.session, request):
            return False
        flow.close(request, actor=by, reason="delivery_confirmed", message=message, tell=tell)
        flow.notify_staff(request, "staff_delivery", event="closed")
        return True

    def read_receipt(self, request: Request, outbox: Outbox, mail: ParsedMail,
                     message: Message) -> None:
        """An MDN about a mail with files: 'displayed' confirms it, 'deleted'/'failed' fails it.

        'processed' and 'dispatched' (handled by the customer's software, not
        shown to anyone) and 'denied' are only recorded: they prove no one saw
        the files. A receipt counts only from the delivery's recipient or a
        registered contact of the request's organisation (a receipt is as
        forgeable as any mail); anyone else's confirms nothing, and the
        assignee is told.
        """
        flow = self.flow
        rows = list(flow.session.scalars(select(Delivery).where(Delivery.outbox_id == outbox.id)
                                         .order_by(Delivery.id)))
        if not rows:
            return
        disposition, by = mail.mdn.disposition.lower(), mail.author or "unknown"
        if not self._from_recipient(request, rows, mail.author):
            record(flow.session, request, "read_receipt_ignored", actor=by, at=flow.now,
                   message=message, reason="not from the recipient of the files")
            flow.alert(f"sender:{by}", "staff_stranger", request=request, message=message, mail=mail,
                       reason="a read receipt from someone who was not sent the files",
                       text=mail.new_text or mail.text)
            return
        if disposition in MDN_CONFIRMS:
            self.confirm(request, [d for d in rows if d.status != "confirmed"], "mdn", by=by,
                         message=message, note=disposition)
            self.close_if_done(request, by=by, message=message)
        elif disposition in MDN_FAILS:
            failed = self.failed(request, [d for d in rows if d.status == "sent"],
                                 f"read receipt: {disposition}", by=by, message=message)
            if failed:
                flow.notify_staff(request, "staff_delivery", event="failed", deliveries=failed)

    def _from_recipient(self, request: Request, rows: Sequence[Delivery], author: str) -> bool:
        if author and any(author == d.recipient.lower() for d in rows):
            return True
        contact = self.flow.lookup.directory.contact_row(author) if author else None
        return (contact is not None and contact.registered and request.organization_id is not None
                and contact.organization_id == request.organization_id)

    # ------------------------------------------------------------ staff

    def confirmed_by_staff(self, request: Request, staff: Staff, note: str,
                           message: Message | None) -> None:
        """``#доставлено по телефону 12.03``: the customer confirmed outside mail."""
        self.confirm_all(request, "staff", by=staff.login, message=message, note=note)

    def may_send_files(self, request: Request) -> bool:
        """May files be sent or asked for on the request as it is now?"""
        return Status(request.status) in FILES_FROM

    # ------------------------------------------------------------ the clock

    def remind(self) -> list[str]:
        """Remind customers of unconfirmed files and of files asked of them; after
        ``delivery.max_reminders`` reminders, tell the assignee. The request numbers touched."""
        return sorted(set(self._remind_deliveries()) | set(self._remind_file_requests()))

    def _remind_deliveries(self) -> list[str]:
        touched = []
        for request, due in self._due(Delivery, "sent"):
            remind, tell = self._split(due)
            if remind:
                self.flow.tell_customer(request, "delivery_reminder", automatic=True,
                                        deliveries=remind, number=remind[0].reminders + 1,
                                        tz=self._tz())
                self._reminded(request, remind, "delivery_reminder",
                               lambda d: {"files": d.files, "to": d.recipient})
            if tell:
                self.flow.notify_staff(request, "staff_delivery", event="unconfirmed",
                                       deliveries=tell, tz=self._tz())
                self._told(request, tell, "delivery_unconfirmed", lambda d: {"files": d.files})
            touched.append(request.number)
        return touched

    def _remind_file_requests(self) -> list[str]:
        touched = []
        for request, due in self._due(FileRequest, "waiting"):
            remind, tell = self._split(due)
            if remind:
                self.flow.tell_customer(request, "files_reminder", automatic=True,
                                        asked=[f.asked for f in remind], tz=self._tz())
                self._reminded(request, remind, "files_reminder", lambda f: {"asked": f.asked})
            if tell:
                self.flow.notify_staff(request, "staff_delivery", event="files_overdue",
                                       asked=[f.asked for f in tell], tz=self._tz())
                self._told(request, tell, "files_overdue", lambda f: {"asked": f.asked})
            touched.append(request.number)
        return touched

    def _due(self, model: type[Delivery] | type[FileRequest], waiting: str):
        """The rows of ``model`` whose next reminder (or notice) is due, by request.

        The SQL preselects by wall time (working time never runs faster); the
        calendar then decides, so reminders fall in working hours.
        """
        flow = self.flow
        minutes = flow.config.delivery.remind_after_minutes
        since = func.coalesce(model.reminded_at, model.created_at)
        rows = flow.session.execute(
            select(model, Request).join(Request, model.request_id == Request.id)
            .where(model.status == waiting, model.staff_told_at.is_(None),
                   since <= flow.now - timedelta(minutes=minutes), Request.status.not_in(DONE))
            .order_by(model.request_id, model.id)
            .with_for_update(of=model, skip_locked=True)).all()
        calendar = flow.calendar
        due = [(row, request) for row, request in rows
               if calendar.add_working_minutes(row.reminded_at or row.created_at, minutes) <= flow.now]
        return [(request, [row for row, _ in group])
                for request, group in groupby(due, key=lambda pair: pair[1])]

    def _split(self, due: list) -> tuple[list, list]:
        """Those still to be reminded, and those whose reminders are used up."""
        most = self.flow.config.delivery.max_reminders
        return [r for r in due if r.reminders < most], [r for r in due if r.reminders >= most]

    def _reminded(self, request: Request, rows: list, kind: str, details) -> None:
        for row in rows:
            row.reminders, row.reminded_at = row.reminders + 1, self.flow.now
            record(self.flow.session, request, kind, actor="system", at=self.flow.now,
                   reminder=row.reminders, **details(row))

    def _told(self, request: Request, rows: list, kind: str, details) -> None:
        for row in rows:
            row.staff_told_at = self.flow.now
            record(self.flow.session, request, kind, actor="system", at=self.flow.now,
                   reminders=row.reminders, **details(row))

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.flow.config.timezone)

