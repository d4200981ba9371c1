"""Clock-driven workflow steps (run by the scheduler)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import exists, select

from ..register.models import Delivery, FileRequest, Request
from ..register.status import Status
from .actions import Workflow
from .op2 import Op2


def close_quiet_requests(flow: Workflow) -> list[str]:
    """ОП1: an answered request closes when the customer stays silent for the quiet period.

    The regulation closes ОП1 once the customer is helped; silence after an
    answer counts as that. ОП2 needs a confirmed delivery and ОП3/ОП4 an
    explicit confirmation, so they never close by silence; nor does a request
    whose files are unconfirmed or that waits for the customer's files (staff
    may have set ОП1 again after files were sent).
    """
    limit = flow.now - timedelta(hours=flow.config.workflow.quiet_close_hours)
    quiet = flow.session.scalars(
        select(Request).where(Request.level == 1,
                              Request.status.in_((Status.AWAITING_CUSTOMER.value,
                                                  Status.RESOLVED.value)),
                              Request.updated_at < limit,
                              ~exists().where(Delivery.request_id == Request.id,
                                              Delivery.status.in_(("sent", "failed"))),
                              ~exists().where(FileRequest.request_id == Request.id,
                                              FileRequest.status == "waiting"))
        .order_by(Request.id).with_for_update(skip_locked=True)).all()
    for request in quiet:
        flow.close(request, actor="system", reason="quiet")
    return [r.number for r in quiet]


def remind_unconfirmed(flow: Workflow) -> list[str]:
    """ОП2: remind customers of files not confirmed and files not sent, then tell the assignee."""
    return Op2(flow).remind()
