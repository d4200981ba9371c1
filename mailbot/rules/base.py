"""The rule interface and what a rule may read."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from ..config import Config
from ..parsers import ParsedMail
from ..register.lookup import Lookup
from .verdict import Verdict


@dataclass(frozen=True)
class Context:
    """Read-only inputs of the rules: config, the register, and the current time."""

    config: Config
    lookup: Lookup
    now: datetime
    mailbox: str = "support"  # the role of the mailbox the mail came from (inbound.mailbox)


class Rule:
    """One decision. Subclasses set ``name``, document the decision, implement ``check``."""

    name: ClassVar[str]

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        raise NotImplementedError
