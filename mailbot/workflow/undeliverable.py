"""Addresses our mail cannot reach (issue 16 §5): marked, spared automatic mail, cleared.

A permanent bounce (DSN) of our mail, or our SMTP server's permanent refusal of a recipient
(transport/smtp.py), marks the address in ``undeliverable_addresses``. While it is marked no
automatic mail goes to it (acknowledgements, reminders, closing notices:
:meth:`~mailbot.workflow.actions.Workflow.tell_customer`), and every staff notice about its
requests says so, with the phone numbers the CRM has for the customer. A staff answer is
still tried: our SMTP server accepting it clears the mark (:func:`delivered`), and so do
``#адрес исправлен`` and ``mailbot undeliverable forget``.
"""
from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert

from ..register.models import Outbox, Request, UndeliverableAddress
from .actions import Workflow
from .states import record


def mark(flow: Workflow, address: str, reply: str, *, source: str, outbox_id: int | None,
         request: Request | None) -> None:
    """``address`` cannot be reached (``source``: 'smtp' or 'dsn'; ``reply``: the words why)."""
    address = address.strip().lower()
    values = {"address": address, "reply": reply[:2000], "refused_at": flow.now,
              "outbox_id": outbox_id, "source": source}
    with flow.session.no_autoflush:
        flow.session.execute(insert(UndeliverableAddress).values(values).on_conflict_do_update(
            index_elements=["address"], set_={k: v for k, v in values.items() if k != "address"}))
    flow.lookup.unflushed.put(("undeliverable", address), UndeliverableAddress(**values))
    record(flow.session, request, "address_undeliverable", actor="mailer-daemon" if source == "dsn"
           else "smtp", at=flow.now, address=address, reply=reply[:500], source=source)


def clear(flow: Workflow, address: str, *, actor: str, how: str,
          request: Request | None) -> bool:
    """The mark of ``address`` goes (``how``: a delivery, a staff command); whether there was one."""
    address = address.strip().lower()
    with flow.session.no_autoflush:
        gone = flow.session.execute(delete(UndeliverableAddress)
                                    .where(UndeliverableAddress.address == address)).rowcount
    flow.lookup.unflushed.put(("undeliverable", address), None)
    if gone:
        record(flow.session, request, "address_deliverable", actor=actor, at=flow.now,
               address=address, how=how)
    return bool(gone)


def delivered(flow: Workflow, outbox_id: int, addresses: list[str]) -> None:
    """Our SMTP server accepted a mail (``outbox_id``) to these marked addresses: their marks go."""
    outbox = flow.session.get(Outbox, outbox_id)
    request = flow.session.get(Request, outbox.request_id) if outbox and outbox.request_id else None
    for address in addresses:
        clear(flow, address, actor="smtp", how="delivered", request=request)

