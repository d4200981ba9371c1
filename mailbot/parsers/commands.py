"""Staff commands: lines starting with ``#`` at the top of a staff reply.

Grammar: one command per line, ``#name argument…``, before any other text
(blank lines between commands are allowed). Names are Russian with English
aliases; ``ОП2``, ``OP2``, ``2`` all name a level. Everything after the
command block is the text of the answer.

| command | aliases | argument |
|---|---|---|
| ``#уровень ОП2`` | ``#level`` | ОП1–ОП4 |
| ``#назначить ivanov`` | ``#assign`` | staff login or e-mail |
| ``#заметка …`` | ``#note`` | none; the whole mail is an internal note |
| ``#инцидент INC-000045`` | ``#incident`` | incident number |
| ``#решено`` | ``#resolved``, ``#solved`` | none; the text is the solution, the customer is asked to confirm |
| ``#закрыть`` | ``#close`` | none |
| ``#открыть`` | ``#reopen``, ``#переоткрыть`` | none; also overrides a rejection |
| ``#организация …`` | ``#organization``, ``#org`` | CRM id or name of the customer's organisation |
| ``#подтверждено`` | ``#confirmed`` | none; the customer confirmed the solution (an unclear reply, by phone): close as confirmed |
| ``#адрес исправлен`` | ``#address ok`` | none but that; the customer's address works again: automatic mail to it resumes |

ОП2, files (regulation §3):

| command | aliases | argument |
|---|---|---|
| ``#файлы …`` | ``#files`` | optional: what is sent; the attached files go with a standard text asking to confirm receipt |
| ``#доставлено …`` | ``#delivered`` | how and when the customer confirmed receipt outside mail ("по телефону 12.03") |
| ``#закрыть без подтверждения: …`` | ``#close unconfirmed: …`` | the reason: close although files are not confirmed (``close_unconfirmed``) |
| ``#запросить …`` | ``#request-files`` | what the customer should send ("логи, скриншот") |

ОП4 (regulation §5; docs/workflow.md): ТП1 at the support address

| ``#оп4`` | ``#op4``, ``#эскалация``, ``#escalate`` | none; the text is what ТП1 tried, for ТП2 |
| ``#дди`` | ``#ddi`` | none; asks the customer for the missing ДДИ (the text is added) |

and ТП2 at the ТП2 address (``#инцидент INC-000045`` links a known incident there)

| ``#новый инцидент …`` | ``#new-incident`` | the new incident's title |
| ``#решение`` | ``#solution`` | none; the text is the solution, stored and sent to ТП1 |
| ``#статус закрыт`` | ``#status`` | the incident's status (``дубликат INC-000045``) |
"""
from __future__ import annotations

import re
from difflib import get_close_matches
from dataclasses import dataclass, field
from typing import Any

from .numbers import find_incident_numbers

ALIASES: dict[str, str] = {
    "уровень": "level", "level": "level",
    "назначить": "assign", "assign": "assign",
    "заметка": "note", "note": "note",
    "инцидент": "incident", "incident": "incident",
    "решено": "resolved", "resolved": "resolved", "solved": "resolved",
    "закрыть": "close", "close": "close",
    "открыть": "reopen", "переоткрыть": "reopen", "reopen": "reopen",
    "организация": "organization", "organization": "organization", "org": "organization",
    "подтверждено": "confirmed", "confirmed": "confirmed",
    "адрес": "address_ok", "address": "address_ok",
    # ОП2, files (regulation §3)
    "файлы": "files", "files": "files",
    "доставлено": "delivered", "delivered": "delivered",
    "запросить": "request_files", "request-files": "request_files",
    # ОП4 (issue 17): ТП1's escalation and ДДИ request, ТП2's answers
    "оп4": "escalate", "op4": "escalate", "эскалация": "escalate", "escalate": "escalate",
    "дди": "ask_ddi", "ddi": "ask_ddi",
    "новый": "new_incident", "новый-инцидент": "new_incident", "new-incident": "new_incident",
    "решение": "solution", "solution": "solution",
    "статус": "incident_status", "status": "incident_status",
}
NEEDS_ARGUMENT = frozenset({"level", "assign", "incident", "organization", "delivered",
                            "request_files", "new_incident", "incident_status",
                            "address_ok"})
# "#адрес исправлен": the only form of the address command
ADDRESS_OK = re.compile(r"^(?:исправлен|работает|доступен|ok|fixed|works)\.?$", re.IGNORECASE)
# "#закрыть без подтверждения: причина": close although files sent are not confirmed
CLOSE_UNCONFIRMED = re.compile(r"^(?:без\s+подтверждения|unconfirmed|without\s+confirmation)"
                               r"(?![\w-])\s*[:—–-]?\s*(.*)$", re.IGNORECASE | re.DOTALL)
NEW_INCIDENT = re.compile(r"^инцидент\b\s*[:]?\s*", re.IGNORECASE)  # "#новый инцидент <title>"
LEVEL = re.compile(r"^(?:оп|op|уровень|level)?\s*-?\s*([1-4])$", re.IGNORECASE)
COMMAND_LINE = re.compile(r"^#\s*([\w-]+)\s*[:]?\s*(.*)$")
STRAY_COMMAND = re.compile(r"^#([\w-]+)(?:\s|:|$)")  # "#решено" below the text (not "# comment")


@dataclass(frozen=True)
class Problem:
    """What is wrong with a command line (``line`` as written; '' for the mail as a whole):
    ``code`` and its details. The words for staff are in ``templates/_problems.j2``."""
    line: str
    code: str
    details: dict[str, Any] = field(default_factory=dict, hash=False)


def problem(line: str, code: str, **details: Any) -> Problem:
    return Problem(line, code, details)


@dataclass(frozen=True)
class Command:
    name: str  # canonical: level, assign, note, incident, resolved, close, reopen, organization,
    # confirmed, address_ok, files, delivered, close_unconfirmed, request_files, escalate, ask_ddi,
    # new_incident, solution, incident_status
    argument: str  # normalised: "2" for a level, "INC-000045" for an incident
    line: str  # as written


@dataclass(frozen=True)
class CommandBlock:
    commands: tuple[Command, ...]
    errors: tuple[Problem, ...]  # the lines that were not valid commands, with the reason
    text: str  # the rest of the mail: the answer itself

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.commands)

    def get(self, name: str) -> Command | None:
        return next((c for c in self.commands if c.name == name), None)


def parse_commands(text: str, incident_prefix: str = "INC") -> CommandBlock:
    """Split ``text`` into its leading command lines and the rest."""
    lines = text.replace("\r\n", "\n").split("\n")
    commands: list[Command] = []
    errors: list[Problem] = []
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line and (commands or errors):
            index += 1
            continue
        if not line.startswith("#"):
            break
        parsed = _parse_line(line, incident_prefix)
        if isinstance(parsed, Command):
            commands.append(parsed)
        else:
            errors.append(parsed)
        index += 1
    rest = "\n".join(lines[index:]).strip() if (commands or errors) else text.strip()
    errors += [problem(line.strip(), "below_text") for line in lines[index:] if _is_stray_command(line)]
    return CommandBlock(tuple(commands), tuple(errors), rest)


def closest_command(word: str) -> str | None:
    """The command a mistyped name most likely means ("уровнь" → "уровень"), if any."""
    found = get_close_matches(word, ALIASES, n=1, cutoff=0.75)
    return found[0] if found else None


def _is_stray_command(line: str) -> bool:
    """A command written below the text ("Добрый день!\n#решено …"): '#' and a command's name."""
    match = STRAY_COMMAND.match(line.strip())
    return match is not None and match.group(1).lower() in ALIASES


def _parse_line(line: str, incident_prefix: str) -> Command | Problem:
    match = COMMAND_LINE.match(line)
    if not match:
        return problem(line, "not_a_command")
    word, argument = match.group(1).lower(), match.group(2).strip()
    name = ALIASES.get(word)
    if name is None:
        return problem(line, "unknown_command", word=word, similar=closest_command(word))
    if name in NEEDS_ARGUMENT and not argument:
        return problem(line, "needs_argument", word=word)
    if name == "level":
        level = LEVEL.match(argument.replace(" ", ""))
        if not level:
            return problem(line, "bad_level")
        argument = level.group(1)
    elif name == "incident":
        numbers = find_incident_numbers(argument, incident_prefix)
        if not numbers:
            return problem(line, "no_incident_number", prefix=incident_prefix)
        argument = numbers[0]
    elif name == "address_ok" and not ADDRESS_OK.match(argument):
        return problem(line, "address_ok_form", word=word)
    elif name == "close" and (unconfirmed := CLOSE_UNCONFIRMED.match(argument)):
        argument = unconfirmed.group(1).strip()
        if not argument:
            return problem(line, "unconfirmed_reason", word=word)
        name = "close_unconfirmed"
    elif name == "new_incident" and word == "новый":
        if not NEW_INCIDENT.match(argument):
            return problem(line, "new_incident_form")
        argument = NEW_INCIDENT.sub("", argument, count=1).strip()
        if not argument:
            return problem(line, "new_incident_title")
    return Command(name, argument, line)
