"""May this customer be helped: is the organisation's support period active?"""
from __future__ import annotations

from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Verdict


class ContractCheck(Rule):
    """Check the support contract of the sender's organisation on the day of the mail."""

    name = "contract-check"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.organization is None or not verdict.intake:
            return
        verdict.contract = context.lookup.directory.active_contract(verdict.organization.id,
                                                                    context.now)
        verdict.contract_checked = True
        if verdict.contract:
            verdict.note(self.name, f"contract {verdict.contract.number or verdict.contract.id} "
                         f"valid to {verdict.contract.valid_to}")
        else:
            verdict.note(self.name, f"no active support contract for {verdict.organization.name!r}")
