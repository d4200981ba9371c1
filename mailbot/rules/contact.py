"""The regulation's first intake step: the company name and the full name (ФИО) of the person."""
from __future__ import annotations

import re

from ..parsers import ParsedMail
from .base import Context, Rule
from .verdict import Role, Verdict

_CAP = r"[А-ЯЁ][а-яё]+(?:-[А-ЯЁ][а-яё]+)?"
PATRONYMIC = r"[А-ЯЁ][а-яё]+(?:вич|вна|чна|ична|инична|ич|оглы|кызы)"
FULL_NAME = re.compile(
    rf"(?<![А-Яа-яЁё])(?:{_CAP}\s+{_CAP}\s+{PATRONYMIC}|{_CAP}\s+[А-ЯЁ]\.\s?[А-ЯЁ]\.)(?![А-Яа-яЁё])")
LABELLED_NAME = re.compile(r"^\s*(?:ФИО|Ф\.И\.О\.|Имя|Контактное лицо)\s*[:\-–]\s*(.+?)\s*$",
                           re.IGNORECASE | re.MULTILINE)
DISPLAY_NAME = re.compile(r"^[А-ЯЁA-Z][а-яёa-z]+(?:[ -][А-ЯЁA-Z][а-яёa-z.]+){1,2}$")


def find_full_name(text: str) -> str:
    """A person's full name written in ``text`` ("ФИО: …", or Фамилия Имя Отчество / Фамилия И. О.)."""
    labelled = LABELLED_NAME.search(text)
    if labelled and len(labelled.group(1).split()) >= 2:
        return " ".join(labelled.group(1).split())
    match = FULL_NAME.search(text)
    return " ".join(match.group(0).split()) if match else ""


class ContactDetails(Rule):
    """Find the company and the ФИО of a sender the CRM does not know.

    Read from the first mail (its signature) and from the answer to our
    question. The company must be named in the text (its CRM name or an
    alias), unless the mail domain already told it; the full name comes from
    the text or, failing that, from a display name that looks like a name.
    """

    name = "contact-details"

    def check(self, mail: ParsedMail, verdict: Verdict, context: Context) -> None:
        if verdict.role is Role.STAFF or verdict.contact is not None:
            return
        if not verdict.intake:
            return
        text = mail.text  # with the signature, where the company and name usually are
        if verdict.organization is None:
            found = context.lookup.directory.find_organizations_by_name(text)
            if found:
                verdict.organization = found[0]
                verdict.role = Role.CUSTOMER
        verdict.contact_name = find_full_name(text) or (
            mail.from_name if DISPLAY_NAME.match(mail.from_name.strip()) else "")
        company = verdict.organization.name if verdict.organization else "unknown company"
        verdict.note(self.name, f"{company}; name {verdict.contact_name or 'unknown'}")
