"""ОП3: search the internal database of known errors for the request's problem."""
from __future__ import annotations

from collections.abc import Iterable

from ..config import Config
from ..parsers import ParsedMail
from .base import Context, Rule
from .level import assess
from .verdict import Action, Verdict


def searched_problems(mails: Iterable[ParsedMail], config: Config) -> list[str]:
    """What :class:`KnownErrorSearch` will search for in these mails, as far as each mail alone
    tells: the problem of a mail that starts a request (names no thread and no request) and
    whose text is ОП3. :meth:`Lookup.prepare` searches them for a batch in one query; a mail
    that becomes ОП3 otherwise is searched when its rule asks."""
    new = (mail.problem for mail in mails if not mail.thread_ids and not mail.request_numbers)
    return [problem for problem in new if assess(problem, config.classify).level == 3]


class KnownErrorSearch(Rule):
    """For a new ОП3 request, find the most similar incidents for the staff notification."""

    name = "known-error-search"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.action is not Action.NEW_REQUEST or verdict.level != 3:
            return
        verdict.incident_matches = context.lookup.search_incidents(mail.problem)
        found = ", ".join(m.number for m in verdict.incident_matches) or "nothing similar"
        verdict.note(self.name, found)
