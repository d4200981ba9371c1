"""The regulation's first intake step: the company name and the full name (ФИО) of the person.

What a sender writes about himself is validated before it is stored or echoed
in our mail: a company is one the CRM knows (matched by name, never taken as
written), and a ФИО is :func:`is_full_name` (2–4 words of letters, hyphens and
initials allowed, at most 100 characters). Anything else is no name: the
customer is asked, or ТП1 settles it.
"""
from __future__ import annotations

import re

from ..parsers import ParsedMail
from ..parsers.reply import CLOSING
from .base import Context, Rule
from .verdict import Role, Verdict

_CAP = r"[А-ЯЁ][а-яё]+(?:-[А-ЯЁ][а-яё]+)?"
PATRONYMIC = r"[А-ЯЁ][а-яё]+(?:вич|вна|чна|ична|инична|ич|оглы|кызы)"
FULL_NAME = re.compile(
    rf"(?<![А-Яа-яЁё])(?:{_CAP}\s+{_CAP}\s+{PATRONYMIC}|{_CAP}\s+[А-ЯЁ]\.\s?[А-ЯЁ]\.)(?![А-Яа-яЁё])")
LABELLED_NAME = re.compile(r"^\s*(?:ФИО|Ф\.И\.О\.|Имя|Контактное лицо|(?:full |contact )?name|"
                           r"contact person)\s*[:\-–]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
GREETING = re.compile(r"^(?:добр|здравствуй|привет|hello|hi|dear|good)", re.IGNORECASE)
MAX_NAME = 100
# A word of letters (any alphabet) with inner hyphens ("Салтыков-Щедрин"), or initials ("И.", "И.О.").
_NAME_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*|(?:[^\W\d_]\.){1,2}")
DISPLAY_NAME = re.compile(r"^[А-ЯЁA-Z][а-яёa-z]+(?:[ -][А-ЯЁA-Z][а-яёa-z.]+){1,2}$")
_INITIALS = re.compile(r"([^\W\d_]\.)\s+(?=[^\W\d_]\.)")  # "И. О." is written as one word "И.О."


def is_full_name(text: str) -> bool:
    """2–4 words of letters (hyphens allowed, initials as "И." or "И.О."), at most 100
    characters: no digits, no URLs, no punctuation that could carry a message."""
    words = _INITIALS.sub(r"\1", text.strip()).split()
    return (0 < len(text) <= MAX_NAME and 2 <= len(words) <= 4
            and all(_NAME_WORD.fullmatch(w) for w in words)
            and any(len(w) > 1 and not w.endswith(".") for w in words))


def find_full_name(text: str) -> str:
    """A person's full name written in ``text`` ("ФИО: …", "Name: …", Фамилия Имя Отчество /
    Фамилия И. О., or a name in any script signed below a closing formula: "Best regards,\nJohn
    Smith"), '' when there is none that :func:`is_full_name` accepts."""
    labelled = LABELLED_NAME.search(text)
    if labelled:
        name = " ".join(labelled.group(1).split())
        if is_full_name(name):
            return name
    match = FULL_NAME.search(text)
    name = " ".join(match.group(0).split()) if match else ""
    if is_full_name(name):
        return name
    for closing in CLOSING.finditer(text):
        signed = text[closing.end():].strip().split("\n", 1)[0]
        if looks_like_name(signed):
            return " ".join(signed.split())
    return ""


def looks_like_name(line: str) -> bool:
    """2–3 capitalised words of letters in any script ("John Smith", "Ivan Petrov", "Иван
    Петров", "Smith J."), no greeting: how people sign and how mail programs show them."""
    line = " ".join(line.split())
    return (bool(DISPLAY_NAME.match(line)) and is_full_name(line)
            and not GREETING.match(line) and not CLOSING.match(line))


def answered_name(new_text: str) -> str:
    """The name a customer gives in answer to our question, on a line of its own ("John Smith")."""
    return next((" ".join(line.split()) for line in new_text.splitlines()[:5]
                 if looks_like_name(line)), "")


class ContactDetails(Rule):
    """Find the company and the ФИО of a sender the CRM does not know.

    Read from the first mail (its signature) and from the answer to our
    question. The company must be named in the text (its CRM name or an
    alias), unless the mail domain already told it, or the first mail did (the answer then
    needs to bring only the name); the full name comes from the text, from a display name that
    looks like one or, in the answer, from a line that does. A name in any script: a customer
    may be John Smith.
    """

    name = "contact-details"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.role is Role.STAFF or verdict.contact is not None:
            return
        if not verdict.intake:
            return
        text = mail.text  # with the signature, where the company and name usually are
        directory, request = context.lookup.directory, verdict.request
        if verdict.organization is None and request is not None and request.organization_id:
            verdict.organization = directory.get_organization(request.organization_id)
        if verdict.organization is None:
            found = directory.find_organizations_by_name(text)
            if found:
                verdict.organization = found[0]
                verdict.role = Role.CUSTOMER
        display = " ".join(mail.from_name.split())
        verdict.contact_name = (find_full_name(text) or (display if looks_like_name(display) else "")
                                or (answered_name(mail.new_text) if request is not None else ""))
        company = verdict.organization.name if verdict.organization else "unknown company"
        verdict.note(self.name, f"{company}; name {verdict.contact_name or 'unknown'}")
