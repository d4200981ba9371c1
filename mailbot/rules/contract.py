"""May this customer be helped: is the organisation's support period active?"""
from __future__ import annotations

from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Verdict


class ContractCheck(Rule):
    """Check the support contract of the sender's organisation on the day of the mail: at intake,
    and when a customer writes to a closed request (reopening it is new work: a request closed
    while the contract ran may be written to after it ended)."""

    name = "contract-check"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        directory = context.lookup.directory
        organization = verdict.organization
        if verdict.reopens_closed and verdict.request.organization_id is not None:
            organization = directory.get_organization(verdict.request.organization_id)
        elif not verdict.intake:
            return
        if organization is None:
            return
        verdict.contract = directory.active_contract(organization.id, context.now)
        verdict.contract_checked = True
        if verdict.contract:
            verdict.note(self.name, f"contract {verdict.contract.number or verdict.contract.id} "
                         f"valid to {verdict.contract.valid_to}")
        else:
            verdict.note(self.name, f"no active support contract for {organization.name!r}")
