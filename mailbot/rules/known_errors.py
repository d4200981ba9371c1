"""ОП3: search the internal database of known errors for the request's problem."""
from __future__ import annotations

from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Action, Verdict


class KnownErrorSearch(Rule):
    """For a new ОП3 request, find the most similar incidents for the staff notification."""

    name = "known-error-search"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.action is not Action.NEW_REQUEST or verdict.level != 3:
            return
        verdict.incident_matches = context.lookup.known_errors(mail)
        found = ", ".join(m.number for m in verdict.incident_matches) or "nothing similar"
        verdict.note(self.name, found)
