"""Clock-driven workflow steps (run by the scheduler)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from ..models import Request
from ..status import Status
from .actions import Workflow


def close_quiet_requests(flow: Workflow) -> list[str]:
    """ОП1: an answered request closes when the customer stays silent for the quiet period.

    The regulation closes ОП1 once the customer is helped; silence after an
    answer counts as that. ОП2 needs a confirmed delivery and ОП3/ОП4 an
    explicit confirmation, so they never close by silence.
    """
    limit = flow.now - timedelta(hours=flow.config.workflow.quiet_close_hours)
    quiet = flow.session.scalars(
        select(Request).where(Request.level == 1,
                              Request.status.in_((Status.AWAITING_CUSTOMER.value,
                                                  Status.RESOLVED.value)),
                              Request.updated_at < limit)
        .order_by(Request.id).with_for_update(skip_locked=True)).all()
    for request in quiet:
        flow.close(request, actor="system", reason="quiet")
    return [r.number for r in quiet]
