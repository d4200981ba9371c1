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
from dataclasses import dataclass

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
class Command:
    name: str  # canonical: level, assign, note, incident, resolved, close, reopen, organization,
    # confirmed, address_ok, files, delivered, close_unconfirmed, request_files, escalate, ask_ddi,
    # new_incident, solution, incident_status
    argument: str  # normalised: "2" for a level, "INC-000045" for an incident
    line: str  # as written


@dataclass(frozen=True)
class CommandBlock:
    commands: tuple[Command, ...]
    errors: tuple[str, ...]  # the lines that were not valid commands, with the reason
    text: str  # the rest of the mail: the answer itself

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.commands)

    def get(self, name: str) -> Command | None:
        return next((c for c in self.commands if c.name == name), None)


def parse_commands(text: str, incident_prefix: str = "INC") -> CommandBlock:
    """Split ``text`` into its leading command lines and the rest."""
    lines = text.replace("\r\n", "\n").split("\n")
    commands: list[Command] = []
    errors: list[str] = []
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
    errors += [f"{line.strip()}: a command goes on the first lines of the mail, above the text "
               "(below a greeting it would reach the customer as text)"
               for line in lines[index:] if _is_stray_command(line)]
    return CommandBlock(tuple(commands), tuple(errors), rest)


def _is_stray_command(line: str) -> bool:
    """A command written below the text ("Добрый день!\n#решено …"): '#' and a command's name."""
    match = STRAY_COMMAND.match(line.strip())
    return match is not None and match.group(1).lower() in ALIASES


def _parse_line(line: str, incident_prefix: str) -> Command | str:
    match = COMMAND_LINE.match(line)
    if not match:
        return f"{line}: not a command"
    word, argument = match.group(1).lower(), match.group(2).strip()
    name = ALIASES.get(word)
    if name is None:
        return f"{line}: unknown command #{word}"
    if name in NEEDS_ARGUMENT and not argument:
        return f"{line}: #{word} needs an argument"
    if name == "level":
        level = LEVEL.match(argument.replace(" ", ""))
        if not level:
            return f"{line}: the level must be ОП1, ОП2, ОП3 or ОП4"
        argument = level.group(1)
    elif name == "incident":
        numbers = find_incident_numbers(argument, incident_prefix)
        if not numbers:
            return f"{line}: no incident number like {incident_prefix}-000045"
        argument = numbers[0]
    elif name == "address_ok" and not ADDRESS_OK.match(argument):
        return f"{line}: write #{word} исправлен (the customer's address works again)"
    elif name == "close" and (unconfirmed := CLOSE_UNCONFIRMED.match(argument)):
        argument = unconfirmed.group(1).strip()
        if not argument:
            return f"{line}: write the reason: #{word} без подтверждения: причина"
        name = "close_unconfirmed"
    elif name == "new_incident" and word == "новый":
        if not NEW_INCIDENT.match(argument):
            return f"{line}: write #новый инцидент <title of the incident>"
        argument = NEW_INCIDENT.sub("", argument, count=1).strip()
        if not argument:
            return f"{line}: #новый инцидент needs the incident's title"
    return Command(name, argument, line)
