"""The corporate CRM: importing organisations, contacts and support contracts, and looking them up.

The regulation asks every intake to find the company in the corporate system
and to check that its support period is active. Rules ask a
:class:`CrmDirectory`; the default :class:`DatabaseDirectory` reads our own
tables, which ``mailbot crm import FILE.csv`` fills from a CRM export.

CSV layout (docs/crm.md has an example):

- encoding UTF-8, UTF-8 with BOM, or cp1251 (detected: what is not valid UTF-8
  is read as cp1251);
- delimiter ``;`` or ``,`` (whichever the header row holds more of);
- a header row naming the columns, in any order, case-insensitive:
  ``crm_id;organization;aliases;domains;contact_name;contact_email;contact_phone;
  contract_number;valid_from;valid_to``. ``organization`` is required, the
  others may be left out; an unknown column name makes the header invalid;
- ``aliases`` and ``domains`` hold several values separated by ``|``;
  dates are ``YYYY-MM-DD`` or ``DD.MM.YYYY``;
- a row names an organisation and may carry a contact (``contact_email`` is
  then required) and/or a support contract (``valid_from`` and ``valid_to``
  are then required). Blank rows are skipped.

Upsert keys: an organisation by ``crm_id`` (a known organisation without a
CRM id and with exactly that name is adopted), else by exact name; a contact
by lower-cased e-mail; a contract by (organisation, number, valid_from). An
empty cell leaves the stored value as it is, so one organisation may span
several rows. Each row is applied in its own savepoint: a bad row is
reported with its line number and reason, the good rows are kept.
"""
from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Select, Text, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .models import Contact, Organization, SupportContract
from .pending import Unflushed

COLUMNS = ("crm_id", "organization", "aliases", "domains", "contact_name", "contact_email",
           "contact_phone", "contract_number", "valid_from", "valid_to")
KINDS = ("organizations", "contacts", "contracts")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
DOMAIN = re.compile(r"^[\w-]+(\.[\w-]+)+$")
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y")
LEGAL_FORMS = frozenset("ооо оао зао пао ао ип нпо нпп нпф фгуп гуп муп фгбу гбу ук тоо "
                        "llc ltd inc jsc".split())


# ---------------------------------------------------------------- the lookup interface

@dataclass(frozen=True)
class OrganizationInfo:
    id: int
    name: str
    aliases: tuple[str, ...]
    domains: tuple[str, ...]
    crm_id: str | None


@dataclass(frozen=True)
class ContactInfo:
    id: int
    email: str
    full_name: str
    phone: str | None
    organization_id: int | None
    registered: bool = True  # vouched for by the CRM or staff (not only by the sender's own mail)


@dataclass(frozen=True)
class ContractInfo:
    id: int
    organization_id: int
    number: str
    valid_from: date
    valid_to: date


class CrmDirectory(Protocol):
    """Where organisations, contacts and support contracts are looked up (pluggable)."""

    def find_contact(self, email: str) -> ContactInfo | None: ...

    def get_organization(self, organization_id: int) -> OrganizationInfo | None: ...

    def find_organization_by_crm_id(self, crm_id: str) -> OrganizationInfo | None: ...

    def find_organization_by_domain(self, domain: str) -> OrganizationInfo | None: ...

    def find_organizations_by_name(self, text: str) -> list[OrganizationInfo]: ...

    def active_contract(self, organization_id: int, on: date) -> ContractInfo | None: ...


def normalize_name(text: str) -> str:
    """An organisation name for comparison: case, ё/е, quotes, punctuation and legal form ignored."""
    words = re.findall(r"\w+", text.lower().replace("ё", "е"))
    return " ".join(w for w in words if w not in LEGAL_FORMS)


class DatabaseDirectory:
    """The directory in our own tables (filled by :func:`import_file`).

    Organisations and contracts are remembered for the directory's lifetime
    (one batch of mail, one transaction): the same companies write again and
    again, and the workflow never changes them, so reading them needs no flush
    of the batch. Contacts the batch has added and not yet flushed are found
    too (``unflushed``).
    """

    def __init__(self, session: Session, tz: str = "Europe/Moscow",
                 unflushed: Unflushed | None = None) -> None:
        self.session = session
        self.tz = ZoneInfo(tz)
        self.unflushed = unflushed or Unflushed(session)
        self._organizations: dict[int, OrganizationInfo | None] = {}
        self._domains: dict[str, OrganizationInfo | None] = {}
        self._contracts: dict[tuple[int, date], ContractInfo | None] = {}
        self._names: list[tuple[set[str], Organization]] | None = None  # (find_organizations_by_name)

    def find_contact(self, email: str) -> ContactInfo | None:
        contact = self.contact_row(email)
        return _contact_info(contact) if contact else None

    def contact_row(self, email: str) -> Contact | None:
        """Our row of the contact with this address (also one added by this batch)."""
        email = email.strip().lower()
        new = self.unflushed.by(Contact, _email).get(email)
        if new:
            return new[0]
        if not self.unflushed.has(("contact", email)):
            self.prepare_contacts([email])
        return self.unflushed.get(("contact", email))

    def prepare(self, emails: list[str], on: datetime) -> None:
        """Read at once what mail from these addresses will ask: contacts, companies, contracts."""
        self.prepare_contacts(emails)
        domains = {e.strip().lower().rpartition("@")[2] for e in emails} - set(self._domains) - {""}
        if domains:
            suffixes = {suffix for domain in domains for suffix in _suffixes(domain)}
            found = self._scalars(select(Organization).where(
                Organization.email_domains.op("&&")(literal(sorted(suffixes), ARRAY(Text)))))
            for domain in domains:
                owner = self._domains[domain] = _owner(domain, found)
                if owner is not None:
                    self._organizations.setdefault(owner.id, owner)
        wanted = {c.organization_id for e in emails
                  if (c := self.unflushed.get(("contact", e.strip().lower())))
                  and c.organization_id} - set(self._organizations)
        if wanted:
            for organization in self._scalars(select(Organization).where(Organization.id.in_(wanted))):
                self._organizations[organization.id] = _organization_info(organization)
        known = {o.id for o in self._domains.values() if o} | {i for i, o in self._organizations.items() if o}
        self._prepare_contracts(known, on.astimezone(self.tz).date())

    def _prepare_contracts(self, organization_ids: set[int], day: date) -> None:
        wanted = {i for i in organization_ids if (i, day) not in self._contracts}
        if not wanted:
            return
        found = self._scalars(
            select(SupportContract)
            .where(SupportContract.organization_id.in_(wanted),
                   SupportContract.valid_from <= day, SupportContract.valid_to >= day)
            .order_by(SupportContract.valid_to.desc(), SupportContract.id))
        for organization_id in wanted:
            contract = next((c for c in found if c.organization_id == organization_id), None)
            self._contracts[organization_id, day] = _contract_info(contract) if contract else None

    def prepare_contacts(self, emails: list[str]) -> None:
        """Read the contacts of these addresses in one query (remembered until the next flush)."""
        wanted = {e.strip().lower() for e in emails} - {""}
        wanted = {e for e in wanted if not self.unflushed.has(("contact", e))}
        if not wanted:
            return
        found = {c.email: c for c in self._scalars(select(Contact).where(Contact.email.in_(wanted)))}
        for email in wanted:
            self.unflushed.put(("contact", email), found.get(email))

    def get_organization(self, organization_id: int) -> OrganizationInfo | None:
        if organization_id not in self._organizations:
            with self.session.no_autoflush:
                organization = self.session.get(Organization, organization_id)
            self._organizations[organization_id] = _organization_info(organization) if organization else None
        return self._organizations[organization_id]

    def find_organization_by_crm_id(self, crm_id: str) -> OrganizationInfo | None:
        organization = self._scalar(select(Organization).where(Organization.crm_id == crm_id))
        return _organization_info(organization) if organization else None

    def find_organization_by_domain(self, domain: str) -> OrganizationInfo | None:
        """The one organisation owning the domain or, failing that, its nearest parent domain."""
        domain = domain.strip().lower()
        if domain not in self._domains:
            self._domains[domain] = self._owner_of(domain)
        return self._domains[domain]

    def _owner_of(self, domain: str) -> OrganizationInfo | None:
        found = self._scalars(select(Organization).where(
            Organization.email_domains.op("&&")(literal(_suffixes(domain), ARRAY(Text)))))
        return _owner(domain, found)

    def find_organizations_by_name(self, text: str) -> list[OrganizationInfo]:
        """Organisations whose name or alias is ``text`` or is named in it, exact matches first.

        Compared by :func:`normalize_name`, whole words only, in Python over every
        organisation (read and normalized once per directory: every mail from an unknown
        sender asks): a support service's CRM holds hundreds, not millions.
        """
        wanted = normalize_name(text)
        if not wanted:
            return []
        if self._names is None:
            self._names = [({normalize_name(n) for n in (o.name, *o.aliases)} - {""}, o)
                           for o in self._scalars(select(Organization))]
        ranked = []
        for names, organization in self._names:
            if wanted in names:
                ranked.append(((0, 0, organization.id), organization))
            else:
                inside = [n for n in names if f" {n} " in f" {wanted} "]
                if inside:
                    ranked.append(((1, -max(map(len, inside)), organization.id), organization))
        return [_organization_info(o) for _, o in sorted(ranked, key=lambda r: r[0])]

    def active_contract(self, organization_id: int, on: date) -> ContractInfo | None:
        """The contract covering day ``on`` (a datetime is taken as its day in the service's zone)."""
        if isinstance(on, datetime):
            on = on.astimezone(self.tz).date()
        if (organization_id, on) not in self._contracts:
            contract = self._scalar(
                select(SupportContract)
                .where(SupportContract.organization_id == organization_id,
                       SupportContract.valid_from <= on, SupportContract.valid_to >= on)
                .order_by(SupportContract.valid_to.desc(), SupportContract.id).limit(1))
            self._contracts[organization_id, on] = _contract_info(contract) if contract else None
        return self._contracts[organization_id, on]

    def _scalar(self, statement: Select) -> Any:
        with self.session.no_autoflush:
            return self.session.scalar(statement)

    def _scalars(self, statement: Select) -> list[Any]:
        with self.session.no_autoflush:
            return list(self.session.scalars(statement))


def _email(contact: Contact) -> tuple[str]:
    return (contact.email,)


def _suffixes(domain: str) -> list[str]:
    """The domain and its parent domains, nearest first (``a.b.ru``, ``b.ru``)."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _owner(domain: str, organizations: list[Organization]) -> OrganizationInfo | None:
    """The one organisation owning the domain or, failing that, its nearest parent domain."""
    for suffix in _suffixes(domain):
        owners = [o for o in organizations if suffix in o.email_domains]
        if owners:
            return _organization_info(owners[0]) if len(owners) == 1 else None
    return None


def _organization_info(o: Organization) -> OrganizationInfo:
    return OrganizationInfo(o.id, o.name, tuple(o.aliases), tuple(o.email_domains), o.crm_id)


def _contact_info(c: Contact) -> ContactInfo:
    return ContactInfo(c.id, c.email, c.full_name, c.phone, c.organization_id, c.registered)


def _contract_info(c: SupportContract) -> ContractInfo:
    return ContractInfo(c.id, c.organization_id, c.number, c.valid_from, c.valid_to)


# ---------------------------------------------------------------- reading the CSV

class CrmFileError(Exception):
    """The file cannot be read or has no valid header row."""


class RowError(ValueError):
    """One row cannot be imported; the message is the reason."""


@dataclass(frozen=True)
class CrmRow:
    """One valid data row of the CSV."""

    line: int
    crm_id: str | None
    organization: str
    aliases: list[str]
    domains: list[str]
    contact: tuple[str, str, str] | None  # (e-mail, full name, phone)
    contract: tuple[str, date, date] | None  # (number, valid_from, valid_to)


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else cp1251; :class:`CrmFileError` when neither fits."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1251")
    except UnicodeDecodeError:
        raise CrmFileError("the file is neither UTF-8 nor cp1251 text") from None


def read_rows(text: str) -> Iterator[tuple[int, dict[str, str] | RowError]]:
    """``(line, cells by column)`` of each non-blank data row, or ``(line, RowError)``.

    Every column is in the cells ("" when the file lacks it). Raises
    :class:`CrmFileError` when the header row is missing or invalid.
    """
    if "\x00" in text:
        raise CrmFileError("the file holds NUL bytes: not a CSV text file")
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = "," if first.count(",") > first.count(";") else ";"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = _header(next((row for row in reader if any(c.strip() for c in row)), []))
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                yield start, RowError(f"{len(cells)} fields, the header has {len(header)}")
            else:
                yield start, dict.fromkeys(COLUMNS, "") | {c: v.strip() for c, v in zip(header, cells)}
    except csv.Error as exc:
        raise CrmFileError(f"line {reader.line_num}: {exc}") from None


def _header(cells: list[str]) -> list[str]:
    names = [c.strip().lower() for c in cells]
    if not names:
        raise CrmFileError("no header row")
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise CrmFileError(f"unknown column(s) in the header: {', '.join(unknown)} "
                           f"(expected some of {';'.join(COLUMNS)})")
    if len(set(names)) < len(names):
        raise CrmFileError("a column is named twice in the header")
    if "organization" not in names:
        raise CrmFileError("the header has no organization column")
    return names


def parse_row(line: int, cells: dict[str, str]) -> CrmRow:
    """A validated row; raises :class:`RowError` with the reason."""
    if not cells["organization"]:
        raise RowError("organization is empty")
    domains = [d.lower().lstrip("@") for d in _split(cells["domains"])]
    bad = [d for d in domains if not DOMAIN.match(d)]
    if bad:
        raise RowError(f"bad domain {bad[0]!r}")
    return CrmRow(line, cells["crm_id"] or None, cells["organization"], _split(cells["aliases"]),
                  domains, _contact(cells), _contract(cells))


def _split(cell: str) -> list[str]:
    return [part.strip() for part in cell.split("|") if part.strip()]


def _contact(cells: dict[str, str]) -> tuple[str, str, str] | None:
    email, name, phone = cells["contact_email"].lower(), cells["contact_name"], cells["contact_phone"]
    if not (email or name or phone):
        return None
    if not email:
        raise RowError("contact without contact_email")
    if not EMAIL.match(email):
        raise RowError(f"bad contact_email {email!r}")
    return email, name, phone


def _contract(cells: dict[str, str]) -> tuple[str, date, date] | None:
    number = cells["contract_number"]
    if not (number or cells["valid_from"] or cells["valid_to"]):
        return None
    valid_from, valid_to = _date(cells, "valid_from"), _date(cells, "valid_to")
    if valid_to < valid_from:
        raise RowError(f"valid_to {valid_to} is before valid_from {valid_from}")
    return number, valid_from, valid_to


def _date(cells: dict[str, str], column: str) -> date:
    value = cells[column]
    if not value:
        raise RowError(f"contract without {column}")
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            pass
    raise RowError(f"bad {column} {value!r} (expected YYYY-MM-DD or DD.MM.YYYY)")


# ---------------------------------------------------------------- the import

@dataclass
class ImportSummary:
    """What an import did: distinct records created and updated per kind, and the rejected rows."""

    rows: int = 0
    created: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    updated: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    def count(self, kind: str) -> tuple[int, int]:
        """(created, updated) for one kind; a record created by this import is not also updated."""
        created = self.created[kind]
        return len(created), len(self.updated[kind] - created)

    def describe(self) -> str:
        """One line: rows read and rejected, records created and updated per kind."""
        counts = ", ".join("{} {} created / {} updated".format(kind, *self.count(kind))
                           for kind in KINDS)
        return f"{self.rows} row(s) read, {len(self.errors)} rejected; {counts}"


def import_file(session: Session, path: str | Path) -> ImportSummary:
    """Import a CRM CSV file into the session (the caller commits)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CrmFileError(f"cannot read {path}: {exc.strerror}") from None
    return import_text(session, decode(data))


def import_text(session: Session, text: str) -> ImportSummary:
    """Upsert every valid row of the CSV ``text``; each row in its own savepoint."""
    summary = ImportSummary()
    for line, cells in read_rows(text):
        summary.rows += 1
        try:
            if isinstance(cells, RowError):
                raise cells
            row = parse_row(line, cells)
            with session.begin_nested():
                changes = _apply(session, row)
        except RowError as exc:
            summary.errors.append((line, str(exc)))
            continue
        except SQLAlchemyError as exc:
            summary.errors.append((line, f"the database refused the row: {_first_line(exc)}"))
            continue
        for kind, record_id, created in changes:
            (summary.created if created else summary.updated)[kind].add(record_id)
    return summary


def _apply(session: Session, row: CrmRow) -> list[tuple[str, int, bool]]:
    """Upsert one row; ``(kind, id, created)`` for each record created or changed."""
    changes: list[tuple[str, int, bool]] = []
    organization = _upsert_organization(session, row, changes)
    if row.contact:
        email, name, phone = row.contact
        contact = session.scalar(select(Contact).where(Contact.email == email))
        values = {"organization_id": organization.id, "full_name": name, "phone": phone or None,
                  "source": "crm"}
        _upsert(session, contact, Contact, {"email": email}, values, "contacts", changes)
    if row.contract:
        number, valid_from, valid_to = row.contract
        key = {"organization_id": organization.id, "number": number, "valid_from": valid_from}
        contract = session.scalar(select(SupportContract).filter_by(**key))
        _upsert(session, contract, SupportContract, key, {"valid_to": valid_to}, "contracts", changes)
    return changes


def _upsert_organization(session: Session, row: CrmRow,
                         changes: list[tuple[str, int, bool]]) -> Organization:
    organization = None
    if row.crm_id:
        organization = session.scalar(select(Organization).where(Organization.crm_id == row.crm_id))
    if organization is None:
        query = select(Organization).where(Organization.name == row.organization)
        if row.crm_id:
            query = query.where(Organization.crm_id.is_(None))
        named = session.scalars(query.limit(2)).all()
        if len(named) > 1:
            raise RowError(f"several organisations are named {row.organization!r}: give a crm_id")
        organization = named[0] if named else None
    values = {"name": row.organization, "crm_id": row.crm_id, "aliases": row.aliases,
              "email_domains": row.domains}
    return _upsert(session, organization, Organization, {}, values, "organizations", changes)


def _upsert(session: Session, record: Any, model: type, key: dict[str, Any],
            values: dict[str, Any], kind: str, changes: list[tuple[str, int, bool]]) -> Any:
    """Create ``record`` or update it with the non-empty ``values``; note the change."""
    values = {k: v for k, v in values.items() if v not in (None, "", [])}
    if record is None:
        record = model(**key, **values)
        session.add(record)
        session.flush()
        changes.append((kind, record.id, True))
        return record
    changed = {k: v for k, v in values.items() if getattr(record, k) != v}
    if changed:
        for name, value in changed.items():
            setattr(record, name, value)
        if hasattr(model, "updated_at"):
            record.updated_at = func.now()
        session.flush()
        changes.append((kind, record.id, False))
    return record


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


__all__ = ["ContactInfo", "ContractInfo", "CrmDirectory", "CrmFileError", "DatabaseDirectory",
           "ImportSummary", "OrganizationInfo", "import_file", "import_text", "normalize_name"]
