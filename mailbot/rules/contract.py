"""May this customer be helped: is the organisation's support period active?"""
from __future__ import annotations

from ..parsers import ParsedMail
from ..status import Status
from .base import Context, Rule
from .verdict import Action, Verdict


class ContractCheck(Rule):
    """Check the support contract of the sender's organisation on the day of the mail."""

    name = "contract-check"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        completing = (verdict.action is Action.APPEND and verdict.request is not None
                      and verdict.request.status == Status.AWAITING_CONTACT_INFO.value)
        if verdict.organization is None or not (verdict.action is Action.NEW_REQUEST or completing):
            return
        verdict.contract = context.lookup.directory.active_contract(verdict.organization.id,
                                                                    context.now)
        verdict.contract_checked = True
        if verdict.contract:
            verdict.note(self.name, f"contract {verdict.contract.number or verdict.contract.id} "
                         f"valid to {verdict.contract.valid_to}")
        else:
            verdict.note(self.name, f"no active support contract for {verdict.organization.name!r}")
