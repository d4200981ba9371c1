"""The corporate CRM: find the company and check its active support period (regulation §2–§4)."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select

from mailbot.register import db
from mailbot.register.crm import CrmFileError, DatabaseDirectory, import_file, import_text
from mailbot.register.models import Contact, Organization, SupportContract

HEADER = ("crm_id;organization;aliases;domains;contact_name;contact_email;contact_phone;"
          "contract_number;valid_from;valid_to\n")
EXPORT = HEADER + (
    "C-001;ООО «Завод»;Завод|ZVD;zavod.ru;Иванов Иван Иванович;Ivanov@Zavod.ru;+7 495 000-00-01;"
    "ТП-17/2026;01.01.2026;31.12.2026\n"
    "C-001;ООО «Завод»;;;Петрова Анна Сергеевна;petrova@zavod.ru;;;;\n"
    "C-002;АО «Теплосеть»;Теплосеть;teploset.ru|mail.teploset.ru;;;;ТП-05/2025;2025-01-01;2025-12-31\n"
)


@pytest.fixture
def sessions(database_url):
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    yield db.make_sessionmaker(engine)
    engine.dispose()


def run_import(sessions, text: str):
    with sessions.begin() as session:
        return import_text(session, text)


def counts(sessions) -> tuple[int, int, int]:
    with sessions() as session:
        return tuple(session.scalar(select(func.count()).select_from(m))
                     for m in (Organization, Contact, SupportContract))


def test_import_creates_organizations_contacts_and_contracts(sessions):
    summary = run_import(sessions, EXPORT)
    assert summary.errors == []
    assert [summary.count(kind) for kind in ("organizations", "contacts", "contracts")] == [
        (2, 0), (2, 0), (2, 0)]
    assert summary.describe() == ("3 row(s) read, 0 rejected; organizations 2 created / 0 updated, "
                                  "contacts 2 created / 0 updated, contracts 2 created / 0 updated")
    with sessions() as session:
        zavod = session.scalar(select(Organization).where(Organization.crm_id == "C-001"))
        assert (zavod.name, zavod.aliases, zavod.email_domains) == (
            "ООО «Завод»", ["Завод", "ZVD"], ["zavod.ru"])
        ivanov = session.scalar(select(Contact).where(Contact.email == "ivanov@zavod.ru"))
        assert (ivanov.full_name, ivanov.phone, ivanov.organization_id) == (
            "Иванов Иван Иванович", "+7 495 000-00-01", zavod.id)
        contract = session.scalar(select(SupportContract).where(
            SupportContract.organization_id == zavod.id))
        assert (contract.number, contract.valid_from, contract.valid_to) == (
            "ТП-17/2026", date(2026, 1, 1), date(2026, 12, 31))


def test_reimport_is_idempotent_and_applies_changes(sessions):
    run_import(sessions, EXPORT)
    again = run_import(sessions, EXPORT)
    assert [again.count(k) for k in ("organizations", "contacts", "contracts")] == [(0, 0)] * 3
    assert counts(sessions) == (2, 2, 2)
    changed = HEADER + (
        "C-001;ООО «Завод-Север»;Завод;zavod.ru;Иванов И. И.;ivanov@zavod.ru;;"
        "ТП-17/2026;01.01.2026;31.03.2027\n"
        "C-002;АО «Теплосеть»;;;Сидоров Пётр;sidorov@teploset.ru;;ТП-06/2026;2026-01-01;2026-12-31\n")
    summary = run_import(sessions, changed)
    assert [summary.count(k) for k in ("organizations", "contacts", "contracts")] == [
        (0, 1), (1, 1), (1, 1)]
    assert counts(sessions) == (2, 3, 3)
    with sessions() as session:
        zavod = session.scalar(select(Organization).where(Organization.crm_id == "C-001"))
        assert (zavod.name, zavod.aliases) == ("ООО «Завод-Север»", ["Завод"])
        ivanov = session.scalar(select(Contact).where(Contact.email == "ivanov@zavod.ru"))
        assert (ivanov.full_name, ivanov.phone) == ("Иванов И. И.", "+7 495 000-00-01")
        assert session.scalar(select(SupportContract.valid_to).where(
            SupportContract.organization_id == zavod.id)) == date(2027, 3, 31)


def test_organization_without_crm_id_is_matched_by_name_and_adopted(sessions):
    run_import(sessions, "organization;domains\nООО «Ромашка»;romashka.ru\n")
    summary = run_import(sessions, "crm_id;organization\nC-777;ООО «Ромашка»\n")
    assert summary.count("organizations") == (0, 1)
    with sessions() as session:
        assert session.scalars(select(Organization.crm_id)).all() == ["C-777"]


def test_bad_rows_are_reported_with_line_numbers_and_good_rows_kept(sessions):
    text = HEADER + (
        "C-001;ООО «Завод»;;zavod.ru;;;;;;\n"
        ";;;;;ivanov@zavod.ru;;;;\n"                                        # line 3
        "C-003;ООО «Луч»;;;Петров;petrov-at-luch.ru;;;;\n"                  # line 4
        "\n"
        "C-004;ООО «Лес»;;;;;;Д-1;31.02.2026;31.12.2026\n"                 # line 6
        "C-005;ООО «Поле»;;;;;;Д-2;2026-06-01;2026-01-01\n"                # line 7
        "C-006;ООО «Река»;;;;;;Д-3;2026-01-01;\n"                          # line 8
        "C-007;ООО «Гора»;;bad domain;;;;;;\n"                             # line 9
        "C-008;ООО «Море»;;;Морев;;+7 000;;;\n"                            # line 10
        "C-009;ООО «Небо»;;;;;;;;;лишнее\n"                                 # line 11
        'C-010;"ООО ""Мир""; Москва";;mir.ru;;;;;;\n')                     # line 12
    summary = run_import(sessions, text)
    assert summary.errors == [
        (3, "organization is empty"),
        (4, "bad contact_email 'petrov-at-luch.ru'"),
        (6, "bad valid_from '31.02.2026' (expected YYYY-MM-DD or DD.MM.YYYY)"),
        (7, "valid_to 2026-01-01 is before valid_from 2026-06-01"),
        (8, "contract without valid_to"),
        (9, "bad domain 'bad domain'"),
        (10, "contact without contact_email"),
        (11, "11 fields, the header has 10"),
    ]
    assert summary.rows == 10  # the blank line is no row
    with sessions() as session:
        assert sorted(session.scalars(select(Organization.crm_id))) == ["C-001", "C-010"]
        assert session.scalar(select(Organization.name).where(
            Organization.crm_id == "C-010")) == 'ООО "Мир"; Москва'


def test_an_ambiguous_name_without_crm_id_is_rejected(sessions):
    run_import(sessions, "crm_id;organization\nA;ООО «Альфа»\nB;ООО «Альфа»\n")
    summary = run_import(sessions, "organization;domains\nООО «Альфа»;alfa.ru\n")
    assert summary.errors == [(2, "several organisations are named 'ООО «Альфа»': give a crm_id")]


def test_cp1251_file_with_comma_delimiter(sessions, tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(EXPORT.replace(";", ",").encode("cp1251"))
    with sessions.begin() as session:
        summary = import_file(session, path)
    assert summary.errors == [] and summary.count("contacts") == (2, 0)
    with sessions() as session:
        assert session.scalar(select(Contact.full_name).where(
            Contact.email == "petrova@zavod.ru")) == "Петрова Анна Сергеевна"


def test_utf8_with_bom_and_semicolon_delimiter(sessions, tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(EXPORT.encode("utf-8-sig"))
    with sessions.begin() as session:
        summary = import_file(session, path)
    assert summary.errors == [] and summary.count("organizations") == (2, 0)


@pytest.mark.parametrize("text", ["", "\n\n", "name;email\nООО Завод;a@b.ru\n",
                                  "crm_id;aliases\nC-1;x\n", "organization;organization\nx;y\n"])
def test_a_file_without_a_valid_header_is_refused(sessions, text):
    with sessions.begin() as session, pytest.raises(CrmFileError):
        import_text(session, text)


@pytest.fixture
def directory(sessions):
    run_import(sessions, EXPORT + "C-003;ООО «Завод Восток»;Восток;vostok.ru;;;;;;\n")
    with sessions() as session:
        yield DatabaseDirectory(session)


def test_contact_lookup_by_email(directory):
    contact = directory.find_contact("IVANOV@zavod.ru ")
    assert contact is not None and contact.full_name == "Иванов Иван Иванович"
    assert directory.find_contact("nobody@zavod.ru") is None


def test_organization_lookup_by_domain_and_subdomain(directory):
    assert directory.find_organization_by_domain("zavod.ru").crm_id == "C-001"
    assert directory.find_organization_by_domain("SPB.Zavod.ru").crm_id == "C-001"
    assert directory.find_organization_by_domain("mail.teploset.ru").crm_id == "C-002"
    assert directory.find_organization_by_domain("gmail.com") is None
    assert directory.find_organization_by_domain("ru") is None


def test_a_domain_claimed_by_two_organizations_identifies_none(sessions, directory):
    run_import(sessions, "crm_id;organization;domains\nC-009;ООО «Двойник»;zavod.ru\n")
    assert directory.find_organization_by_domain("zavod.ru") is None


def test_organization_lookup_by_name(directory):
    assert [o.crm_id for o in directory.find_organizations_by_name("ооо завод")] == ["C-001"]
    assert [o.crm_id for o in directory.find_organizations_by_name('"ZVD"')] == ["C-001"]
    assert [o.crm_id for o in directory.find_organizations_by_name("АО Теплосеть")] == ["C-002"]
    found = directory.find_organizations_by_name("Сбой у ООО «Завод Восток», ТП-2026-000001")
    assert [o.crm_id for o in found] == ["C-003", "C-001"]
    assert directory.find_organizations_by_name("ООО") == []


def test_active_and_expired_contracts(directory):
    zavod = directory.find_organization_by_domain("zavod.ru").id
    teploset = directory.find_organization_by_domain("teploset.ru").id
    assert directory.active_contract(zavod, date(2026, 1, 1)).number == "ТП-17/2026"
    assert directory.active_contract(zavod, date(2026, 12, 31)).number == "ТП-17/2026"
    assert directory.active_contract(zavod, date(2025, 12, 31)) is None
    assert directory.active_contract(teploset, date(2026, 3, 1)) is None  # expired
    assert directory.active_contract(teploset, date(2025, 6, 1)).number == "ТП-05/2025"


def test_contract_day_is_taken_in_moscow(directory):
    teploset = directory.find_organization_by_domain("teploset.ru").id
    late_utc = datetime(2025, 12, 31, 20, 59, tzinfo=timezone.utc)  # 23:59 MSK, still 31 Dec
    assert directory.active_contract(teploset, late_utc) is not None
    after_midnight = datetime(2025, 12, 31, 21, 30, tzinfo=timezone.utc)  # 00:30 MSK, 1 Jan
    assert directory.active_contract(teploset, after_midnight) is None


def test_cli_crm_import(database_url, tmp_path, monkeypatch, capsys):
    from mailbot.cli.main import main

    monkeypatch.setenv("MAILBOT_DATABASE_URL", database_url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    path = tmp_path / "export.csv"
    path.write_text(EXPORT + ";;;;;;;;;\nC-004;ООО «Луч»;;;Петров;bad-address;;;;\n", encoding="utf-8")
    assert main(["crm", "import", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["4 row(s) read, 1 rejected; organizations 2 created / 0 updated, "
                   "contacts 2 created / 0 updated, contracts 2 created / 0 updated",
                   "line 6: bad contact_email 'bad-address'"]
    assert main(["crm", "import", str(path)]) == 0
    assert "organizations 0 created / 0 updated" in capsys.readouterr().out


def test_cli_crm_import_of_an_unreadable_file_is_a_data_error(database_url, tmp_path,
                                                              monkeypatch, capsys):
    from mailbot.cli.main import main

    monkeypatch.setenv("MAILBOT_DATABASE_URL", database_url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    assert main(["crm", "import", str(tmp_path / "missing.csv")]) == 65
    assert "cannot read" in capsys.readouterr().err
    path = tmp_path / "garbage.csv"
    path.write_bytes(b"\x00\x01PK\x03\x04")
    assert main(["crm", "import", str(path)]) == 65
