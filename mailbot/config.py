"""The one config loader: a TOML file plus ``MAILBOT_*`` environment overrides.

Every setting has a default, so mailbot runs with no file at all (embedded
PostgreSQL and development mail server). An override ``MAILBOT_<SECTION>_<KEY>``
replaces ``[section] key`` from the file; ``MAILBOT_DATABASE_URL`` is the usual
way to point at a real database. Secrets may come from ``<key>_file`` (a path
whose content is the value). A wrong value raises :class:`ConfigError` whose
message is one line naming the key.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import level_cues


class ConfigError(Exception):
    """A config value is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""  # postgresql://… ; empty = embedded PostgreSQL under state_dir


@dataclass(frozen=True)
class MailboxConfig:
    """The ТП2 mailbox, ``[imap.tp2]``: an IMAP account of its own (empty username: none, the
    ТП2 address arrives in the support account). Host and port are those of ``[imap]``
    unless given; every other setting is ``[imap]``'s."""

    host: str = ""
    port: int = 0
    username: str = ""
    password: str = ""
    refresh_token: str = ""  # with auth = "oauth2" and a refresh-token grant: this account's own
    folders: tuple[str, ...] = ("INBOX",)


AUTH_METHODS = ("password", "oauth2")


def _check_auth(section: str, auth: str) -> None:
    if auth not in AUTH_METHODS:
        raise ConfigError(f"{section}.auth: expected 'password' or 'oauth2', got {auth!r}")


@dataclass(frozen=True)
class ImapConfig:
    host: str = ""  # empty = embedded development mail server
    port: int = 993
    ssl: bool = True
    starttls: bool = False
    username: str = ""
    password: str = ""
    auth: str = "password"  # or "oauth2": XOAUTH2/OAUTHBEARER with a token from [oauth2]
    refresh_token: str = ""  # set for the ТП2 account from [imap.tp2]; [imap] uses [oauth2]'s
    folders: tuple[str, ...] = ("INBOX",)
    processed_folder: str = "Processed"
    idle: bool = True
    poll_interval: float = 30.0  # seconds, when IDLE is off or unsupported
    idle_timeout: float = 600.0  # re-issue IDLE after this many seconds
    fetch_batch: int = 50
    tp2: MailboxConfig = field(default_factory=MailboxConfig)

    def __post_init__(self) -> None:
        _check_auth("imap", self.auth)

    def mailboxes(self) -> list[tuple[str, ImapConfig]]:
        """``(role, account)`` of every mailbox the daemon reads: this one (``support``), and the
        ТП2 mailbox (``tp2``) when ``[imap.tp2]`` names an account."""
        found = [("support", self)]
        if self.tp2.username:
            found.append(("tp2", replace(self, host=self.tp2.host or self.host,
                                         port=self.tp2.port or self.port,
                                         username=self.tp2.username, password=self.tp2.password,
                                         refresh_token=self.tp2.refresh_token,
                                         folders=self.tp2.folders, tp2=MailboxConfig())))
        return found


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""  # empty = embedded development mail server
    port: int = 25
    ssl: bool = False
    starttls: bool = False
    username: str = ""
    password: str = ""
    auth: str = "password"  # or "oauth2" (XOAUTH2/OAUTHBEARER with a token from [oauth2])
    timeout: float = 30.0
    max_attempts: int = 10
    retry_base: float = 30.0  # seconds; doubles on every failed attempt
    connections: int = 2  # SMTP connections a daemon sends over at once (fewer if the server refuses)

    def __post_init__(self) -> None:
        if not 1 <= self.connections <= 16:
            raise ConfigError(f"smtp.connections: expected 1 to 16, got {self.connections!r}")
        _check_auth("smtp", self.auth)


OAUTH2_PROVIDERS = ("microsoft", "google", "yandex", "generic")
OAUTH2_GRANTS = ("refresh_token", "client_credentials")
OAUTH2_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


@dataclass(frozen=True)
class OAuth2Config:
    """OAuth2 for IMAP and SMTP (``auth = "oauth2"``): where access tokens come from
    (:mod:`mailbot.transport.oauth`). Secrets belong in ``client_secret_file`` /
    ``refresh_token_file`` or ``MAILBOT_OAUTH2_CLIENT_SECRET(_FILE)``, never inline."""

    provider: str = "generic"  # microsoft (msal), google, yandex or generic
    grant: str = "refresh_token"  # or client_credentials (microsoft, generic)
    tenant: str = ""  # microsoft: the directory (tenant) id or domain
    client_id: str = ""
    client_secret: str = ""
    refresh_token: str = ""  # the support account's (also used to send)
    token_url: str = ""  # the token endpoint (generic; google and yandex have theirs)
    authority: str = ""  # microsoft: default https://login.microsoftonline.com/<tenant>
    scopes: tuple[str, ...] = ()  # default: the provider's IMAP and SMTP scopes
    mechanism: str = "XOAUTH2"  # or OAUTHBEARER (RFC 7628)
    ca_file: str = ""  # CA bundle for the token endpoint (default: the system's)
    refresh_margin: float = 300.0  # seconds before its expiry a token is replaced
    timeout: float = 30.0  # seconds for one token request

    def __post_init__(self) -> None:
        for key, allowed in (("provider", OAUTH2_PROVIDERS), ("grant", OAUTH2_GRANTS),
                             ("mechanism", OAUTH2_MECHANISMS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"oauth2.{key}: expected one of {', '.join(allowed)}, "
                                  f"got {getattr(self, key)!r}")
        for key in ("token_url", "authority"):
            url = getattr(self, key)
            if url and not re.fullmatch(r"https://[^\s/?#]+(/[^\s#]*)?", url):
                raise ConfigError(f"oauth2.{key}: expected an https:// URL, got {url!r}")
        if self.timeout <= 0:
            raise ConfigError(f"oauth2.timeout: must be positive, got {self.timeout!r}")

    def check_complete(self) -> None:
        """Raise :class:`ConfigError` naming what a token request would lack."""
        if not self.client_id:
            raise ConfigError("oauth2.client_id: needed with auth = \"oauth2\"")
        if self.grant == "client_credentials":
            if self.provider in ("google", "yandex"):
                raise ConfigError(f"oauth2.grant: {self.provider} gives mail access by a "
                                  "refresh token only; use grant = \"refresh_token\"")
            if not self.client_secret:
                raise ConfigError("oauth2.client_secret: needed by the client_credentials grant "
                                  "(client_secret_file or MAILBOT_OAUTH2_CLIENT_SECRET_FILE)")
        elif not self.refresh_token:
            raise ConfigError("oauth2.refresh_token: needed by the refresh_token grant "
                              "(refresh_token_file or MAILBOT_OAUTH2_REFRESH_TOKEN_FILE)")
        if self.provider == "generic" and not self.token_url:
            raise ConfigError("oauth2.token_url: needed with provider = \"generic\"")
        if self.provider == "microsoft" and not (self.tenant or self.authority):
            raise ConfigError("oauth2.tenant: needed with provider = \"microsoft\" "
                              "(the directory id or domain, e.g. example.onmicrosoft.com)")


_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True)
class SupportConfig:
    address: str = "support@localhost"  # customers write here; replies come from here
    name: str = "Техническая поддержка"
    name_en: str = "Technical support"  # the name in mail to customers who write in English
    tp1_address: str = "tp1@localhost"  # ТП1 group: new-request notifications
    tp2_address: str = "tp2@localhost"  # ТП2 mailbox (escalations)
    request_prefix: str = "ТП"
    incident_prefix: str = "INC"
    ack_limit_per_hour: int = 5  # acknowledgements per sender per hour
    # automatic mail per hour to addresses that are not registered contacts, all together
    unknown_auto_reply_limit_per_hour: int = 30
    contract_contact: str = "отдел продаж"  # whom a customer without a contract should contact
    contract_contact_en: str = "our sales department"  # the same, for customers who write in English
    # staff mail to this address (an alias of the same mailbox, as Request Tracker's comment
    # address) is an internal note on its request; empty: none (``#заметка`` still works)
    note_address: str = ""

    def __post_init__(self) -> None:
        for key in ("address", "tp1_address", "tp2_address", "note_address"):
            value = getattr(self, key).strip().lower()
            if value and not _ADDRESS.match(value):
                raise ConfigError(f"support.{key}: not one plain e-mail address: {value!r}")
            object.__setattr__(self, key, value)
        if self.note_address and self.note_address == self.address:
            raise ConfigError("support.note_address: must differ from support.address")


@dataclass(frozen=True)
class LimitsConfig:
    max_message_bytes: int = 50 * 1024 * 1024
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_attachments: int = 50
    notify_attachment_bytes: int = 10 * 1024 * 1024  # files attached to a staff notification
    parse_timeout: float = 30.0  # seconds one message may take to parse; then it is quarantined

    def __post_init__(self) -> None:
        if not 0 < self.parse_timeout <= 3600:
            raise ConfigError("limits.parse_timeout: expected seconds between 0 and 3600, "
                              f"got {self.parse_timeout!r}")


@dataclass(frozen=True)
class DevConfig:
    """The embedded development mail server (used when imap.host is empty)."""

    imap_port: int = 4143
    smtp_port: int = 4025
    http_port: int = 4080
    password: str = "secret"
    board_port: int = 4081  # the supervisors' board in the embedded mode (0: none)
    metrics_port: int = 4082  # /metrics, /healthz, /readyz in the embedded mode (0: none)


HH_MM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


@dataclass(frozen=True)
class SlaConfig:
    """The SLA clock (DESIGN.md §6): calendar, working hours and reaction norms in minutes."""

    calendar: str = "business"  # "business" (Mon–Fri, Russian production calendar) or "24x7"
    work_start: str = "09:00"
    work_end: str = "18:00"
    norm_op1: int = 20
    norm_op2: int = 40
    norm_op3: int = 120
    norm_op4: int = 180  # first reaction to an ОП4 escalation (ТП2's answer)
    # ---- the SLA clock's ladder (docs/workflow.md, "The SLA clock"); times in working minutes
    warn_share: float = 0.75  # warn the assignee when this share of a clock's time has passed
    escalate_after: int = 60  # after a breach, tell the next supervisor up this much later
    delivery_confirm: int = 480  # an ОП2 delivery unconfirmed this long is overdue (staff side)
    confirm_remind: int = 480  # a solution unconfirmed this long: the customer is reminded
    confirm_overdue: int = 960  # … this long: the assignee is told
    contact_info_wait: int = 60  # contact details asked for and not given: ТП1 is told
    # ---- supervisors' digests
    digest_times: tuple[str, ...] = ("09:00", "14:00")  # local time, on working days; [] = none
    digest_horizon: int = 120  # a digest lists what is overdue or due within this time
    digest_max_items: int = 300  # at most this many items in one digest (the rest counted)
    supervisor_addresses: tuple[str, ...] = ()  # heads of support: every digest, top of the ladder

    def __post_init__(self) -> None:
        if self.calendar not in ("business", "24x7"):
            raise ConfigError(f"sla.calendar: expected 'business' or '24x7', got {self.calendar!r}")
        for key in ("work_start", "work_end"):
            if not HH_MM.match(getattr(self, key)):
                raise ConfigError(f"sla.{key}: expected HH:MM, got {getattr(self, key)!r}")
        if self.work_start >= self.work_end:
            raise ConfigError(f"sla.work_end: must be later than work_start {self.work_start}")
        for level in range(1, 5):
            if self.norm(level) <= 0:
                raise ConfigError(f"sla.norm_op{level}: must be a positive number of minutes")
        self._check_ladder()

    def _check_ladder(self) -> None:
        if not 0 < self.warn_share < 1:
            raise ConfigError(f"sla.warn_share: expected a share between 0 and 1 (e.g. 0.75), "
                              f"got {self.warn_share!r}")
        for key in ("escalate_after", "delivery_confirm", "confirm_remind", "confirm_overdue",
                    "contact_info_wait", "digest_horizon", "digest_max_items"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"sla.{key}: must be a positive number")
        if self.confirm_overdue <= self.confirm_remind:
            raise ConfigError(f"sla.confirm_overdue: must be later than confirm_remind "
                              f"({self.confirm_remind} minutes)")
        bad_time = next((t for t in self.digest_times if not HH_MM.match(t)), None)
        if bad_time is not None:
            raise ConfigError(f"sla.digest_times: expected HH:MM times, got {bad_time!r}")
        addresses = tuple(a.strip().lower() for a in self.supervisor_addresses if a.strip())
        if addresses:
            from .parsers.addresses import is_valid_address  # late: the parsers are a big import

            bad = next((a for a in addresses if not is_valid_address(a)), None)
            if bad is not None:
                raise ConfigError(f"sla.supervisor_addresses: not one plain e-mail address: {bad!r}")
        object.__setattr__(self, "supervisor_addresses", addresses)
        object.__setattr__(self, "digest_times", tuple(sorted(set(self.digest_times))))

    def norm(self, level: int) -> int:
        """The reaction norm of ОП``level`` in (working) minutes."""
        if level not in (1, 2, 3, 4):
            raise ValueError(f"no assistance level {level!r}")
        return getattr(self, f"norm_op{level}")


@dataclass(frozen=True)
class ClassifyConfig:
    """How a new request's level (ОП1–ОП3) is found: weighted cues (syntax and defaults in
    :mod:`mailbot.level_cues`, method in :mod:`mailbot.rules.level`)."""

    op1_cues: tuple[str, ...] = level_cues.OP1_CUES
    op2_cues: tuple[str, ...] = level_cues.OP2_CUES
    op3_cues: tuple[str, ...] = level_cues.OP3_CUES
    request_verbs: tuple[str, ...] = level_cues.REQUEST_VERBS
    need_words: tuple[str, ...] = level_cues.NEED_WORDS
    give_verbs: tuple[str, ...] = level_cues.GIVE_VERBS
    transfer_objects: tuple[str, ...] = level_cues.TRANSFER_OBJECTS
    delivery_problems: tuple[str, ...] = level_cues.DELIVERY_PROBLEMS
    delivery_nouns: tuple[str, ...] = level_cues.DELIVERY_NOUNS
    arrival_problems: tuple[str, ...] = level_cues.ARRIVAL_PROBLEMS
    document_nouns: tuple[str, ...] = level_cues.DOCUMENT_NOUNS
    not_failures: tuple[str, ...] = level_cues.NOT_FAILURES
    hypothetical_markers: tuple[str, ...] = level_cues.HYPOTHETICAL_MARKERS
    repair_verbs: tuple[str, ...] = level_cues.REPAIR_VERBS
    not_symptoms: tuple[str, ...] = level_cues.NOT_SYMPTOMS
    circumstance_words: tuple[str, ...] = level_cues.CIRCUMSTANCE_WORDS
    intent_weight: float = 3.0  # a request to send + something to send; a delivery problem
    give_weight: float = 1.5  # the customer sends something
    symptom_weight: float = 2.0  # "не" + a verb: what the system does not do ("не меняются")
    howto_weight: float = 2.5  # "как" + a verb
    question_weight: float = 1.5  # a sentence ending with "?" (a question, ОП1)
    subject_weight: float = 1.5  # cues in the subject count so many times
    lead_weight: float = 1.25  # … in the first two sentences of the text
    tail_weight: float = 0.75  # … after the sixth sentence
    hypothetical_factor: float = 0.25  # failure cues after "если", "чтобы", "можно ли", …
    after_failure_factor: float = 0.5  # ОП1 cues after a sentence naming a failure
    delivery_window: int = 3  # words between a delivery problem and its noun
    op3_bias: float = 1.0  # ОП3's score is multiplied by this before the comparison
    failure_over_file: float = 1.75  # … and by this against ОП2 (a failure + a file: ОП3)
    weak_score: float = 1.5  # a best score below this is too weak to choose by: default_level
    min_score: float = 2.5  # a best score below this is unsure
    min_margin: float = 0.3  # a runner-up above (1 - this) × the best score is unsure
    default_level: int = 3  # no cue, or too weak ones: a possible failure (ТП1 confirms)
    doubt_to_failure: bool = True  # unsure between ОП1 and ОП3: propose ОП3 (ТП1 confirms)

    def __post_init__(self) -> None:
        if self.default_level not in (1, 2, 3):
            raise ConfigError(f"classify.default_level: expected 1, 2 or 3, got {self.default_level!r}")
        for key in ("op1_cues", "op2_cues", "op3_cues", "request_verbs", "need_words",
                    "give_verbs", "transfer_objects",
                    "delivery_problems", "delivery_nouns", "arrival_problems", "document_nouns",
                    "not_failures",
                    "hypothetical_markers", "repair_verbs", "not_symptoms",
                    "circumstance_words"):
            for cue in getattr(self, key):
                try:
                    level_cues.parse_cue(cue)
                except ValueError as exc:
                    raise ConfigError(f"classify.{key}: {cue!r}: {exc}") from None
        for key in ("hypothetical_factor", "after_failure_factor", "min_margin"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"classify.{key}: expected a number from 0 to 1, got {getattr(self, key)!r}")
        for key in ("subject_weight", "lead_weight", "tail_weight", "op3_bias",
                    "failure_over_file"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"classify.{key}: must be positive, got {getattr(self, key)!r}")


HOST_OR_NETWORK = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?$")
STAFF_AUTHENTICATION = ("dmarc", "none")


@dataclass(frozen=True)
class StaffConfig:
    """Who may handle which level (regulation §6), and how staff mail is trusted.

    ``authentication = "dmarc"``: staff mail acts only when our receiving server's
    ``Authentication-Results`` (authserv-id in ``trusted_authserv_id``) show a
    DMARC-aligned pass for its ``From:`` domain, or it came through one of
    ``trusted_relays`` (see :mod:`mailbot.rules.authentication`). ``"none"``
    trusts ``From:`` alone: insecure, for the development mail server only.
    """

    project_support_department: str = "Отдел сопровождения проектов"  # ОП1/ОП2 staff
    min_years_op12: int = 3
    min_years_op34: int = 5
    assignment: str = "least_loaded"  # or "round_robin"
    authentication: str = "dmarc"  # or "none" (insecure: From: alone identifies staff)
    trusted_authserv_id: tuple[str, ...] = ()  # authserv-ids our receiving servers write
    internal_hosts: tuple[str, ...] = ()  # our MTA/IMAP hosts: names, addresses or networks
    trusted_relays: tuple[str, ...] = ()  # relays whose every mail is trusted (addresses, names)

    def __post_init__(self) -> None:
        if self.assignment not in ("least_loaded", "round_robin"):
            raise ConfigError("staff.assignment: expected 'least_loaded' or 'round_robin', "
                              f"got {self.assignment!r}")
        if self.authentication not in STAFF_AUTHENTICATION:
            raise ConfigError("staff.authentication: expected 'dmarc' or 'none', "
                              f"got {self.authentication!r}")
        for key in ("trusted_authserv_id", "internal_hosts", "trusted_relays"):
            given = getattr(self, key)
            items = given.split(",") if isinstance(given, str) else given
            values = tuple(v.strip().lower().rstrip(".") for v in items if v.strip())
            bad = [v for v in values if not _host_or_network(v)]
            if bad:
                raise ConfigError(f"staff.{key}: not a host name or IP address: {bad[0]!r}")
            object.__setattr__(self, key, values)
        if self.trusted_relays and not self.internal_hosts:
            raise ConfigError("staff.trusted_relays: needs staff.internal_hosts (the hosts whose "
                              "Received header names the relay)")


def _host_or_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
        return True
    except ValueError:
        return bool(HOST_OR_NETWORK.match(value))


@dataclass(frozen=True)
class WorkflowConfig:
    """Confirmation and closing (regulation §2–4): how a customer's reply to an answer reads
    (:mod:`mailbot.rules.reading`). Phrases match whole words, any case, ё as е."""

    quiet_close_hours: float = 72.0  # an answered ОП1/ОП2 request closes after this silence
    # an explicit confirmation that the solution works; thanks alone are none
    confirm_positive: tuple[str, ...] = (
        "помогло", "помог", "помогли", "заработало", "заработал", "заработала", "всё работает",
        "все работает", "всё заработало", "все заработало", "теперь работает", "снова работает",
        "работает нормально", "работает корректно", "работает штатно", "решено", "решена",
        "проблема решена", "вопрос решен", "проблема устранена", "ошибка устранена",
        "ошибка ушла", "ошибка исчезла", "проблема ушла", "проблема исчезла", "ошибок нет",
        "ошибок больше нет", "больше не появляется", "больше не возникает", "больше не повторяется",
        "получилось", "всё получилось", "все получилось", "всё в порядке", "все в порядке",
        "вопрос закрыт", "вопрос снят", "вопросов нет", "вопросов больше нет", "можно закрывать",
        "можно закрыть", "запрос можно закрыть", "it works", "works now", "working now",
        "solved", "resolved", "fixed", "that helped", "it helped", "works fine", "works perfectly",
        "working fine", "all good", "all working", "problem is gone", "issue is gone",
        "error is gone", "no more errors", "that did it", "that did the trick", "you can close",
        "can be closed", "please close")
    # "it did not help": wins over everything else ("спасибо, но не помогло")
    confirm_negative: tuple[str, ...] = (
        "не помогло", "не помог", "не помогли", "не работает", "не заработало", "не заработал",
        "не решено", "не решена", "не получилось", "по-прежнему", "все еще", "всё ещё",
        "ошибка осталась", "проблема осталась", "та же ошибка", "ошибка та же", "та же проблема",
        "ошибка повторяется", "снова ошибка", "опять ошибка", "опять не", "снова не",
        "doesn't work", "does not work", "not working", "still", "not fixed", "didn't help",
        "did not help", "didn't work", "did not work", "doesn't help", "does not help", "not solved",
        "not resolved", "same error", "same problem", "same issue", "no luck", "nothing changed",
        "no change")
    # with a confirmation, words that make it unsure ("вроде заработало"): the assignee decides
    confirm_hedges: tuple[str, ...] = (
        "вроде", "вроде бы", "кажется", "похоже", "наверное", "возможно", "пока работает",
        "пока все", "пока всё", "пока что", "пока нормально", "пока заработало", "частично",
        "не до конца", "не полностью", "не совсем", "почти", "seems", "maybe", "partly",
        "partially", "for now", "so far", "i think", "probably", "looks like", "appears to",
        "mostly", "temporarily")
    # thanks and "we will see": no confirmation, nothing new; the request waits
    acknowledgements: tuple[str, ...] = (
        "спасибо", "спс", "благодарю", "благодарим", "посмотрим", "посмотрю", "понаблюдаем",
        "понаблюдаю", "попробуем",
        "попробую", "проверим", "проверю", "будем пробовать", "будем смотреть", "будем проверять",
        "ок", "окей", "ok", "okay", "хорошо", "понял", "поняла", "поняли", "понятно", "ясно",
        "принято", "принял", "приняла", "сообщим", "сообщу", "отпишусь", "отпишемся", "вернусь",
        "вернемся", "thanks", "thank you", "will try", "will check", "noted", "thx", "got it",
        "will do", "we'll see", "we will see", "let you know", "understood", "we'll check",
        "we will check", "we'll try", "we will try", "will test", "we'll watch", "we will watch",
        "keep an eye")
    # something was done, its result not said ("сделали, как вы написали"): the assignee decides
    done_phrases: tuple[str, ...] = (
        "сделали", "сделал", "сделала", "выполнили", "выполнил", "выполнила", "попробовали",
        "попробовал", "попробовала", "проделали", "установили", "установил", "применили",
        "применил", "перезапустили", "перезапустил", "переустановили", "переустановил",
        "обновили", "обновил", "done", "tried", "installed", "restarted", "applied", "updated",
        "reinstalled", "rebooted", "followed your")


DDI_PARTS = ("screenshot", "logs", "system_info")


@dataclass(frozen=True)
class DdiConfig:
    """ДДИ, the additional diagnostic information of regulation §5: which files are which part.

    A pattern with a ``/`` is a content type (``image/*``), any other one a file name
    (``*.log``), both compared case-insensitively as shell patterns. A file is the first part
    in the order of :data:`DDI_PARTS` (the most particular first) one of whose patterns it
    matches. ``required``: the parts an escalation to ТП2 needs.
    """

    screenshot: tuple[str, ...] = ("image/*", "*.png", "*.jpg", "*.jpeg", "*.bmp", "*.gif",
                                   "*.tif", "*.tiff", "*.webp", "*screenshot*", "*скриншот*")
    logs: tuple[str, ...] = ("*.log", "*.log.*", "*log*.txt", "*log*.zip", "*.evtx", "*.etl",
                             "*.zip", "*.7z", "*.rar", "*.gz", "*.tgz")
    system_info: tuple[str, ...] = ("msinfo*", "systeminfo*", "sysinfo*", "*system*info*", "*.nfo",
                                    "*.txt")
    required: tuple[str, ...] = DDI_PARTS

    def __post_init__(self) -> None:
        unknown = [part for part in self.required if part not in DDI_PARTS]
        if unknown:
            raise ConfigError(f"ddi.required: unknown part {unknown[0]!r} "
                              f"(one of {', '.join(DDI_PARTS)})")


@dataclass(frozen=True)
class DeliveryConfig:
    """ОП2 (regulation §3): files sent to customers must be confirmed; files asked of them awaited.

    Reminders are counted in working hours of the ``[sla]`` calendar: the customer is
    reminded ``max_reminders`` times, ``remind_after_hours`` apart, then the assignee is told.
    """

    remind_after_hours: float = 8.0  # working hours before each reminder (and the assignee's notice)
    max_reminders: int = 2  # reminders to the customer before the assignee is told
    close_on_confirmation: bool = True  # an answered ОП2 request closes when its files are confirmed
    inline_file_min_bytes: int = 30 * 1024  # an inline image this large counts as a sent file (a screenshot)
    receipt_positive: tuple[str, ...] = (
        "получил", "получила", "получили", "получено", "получены", "получен", "скачал", "скачала",
        "скачали", "скачано", "загрузили", "дошли", "дошло", "дошел", "дошла", "файлы пришли",
        "файл пришел", "письмо пришло", "received", "got the files", "downloaded")
    receipt_negative: tuple[str, ...] = (
        "не получил", "не получила", "не получили", "не получено", "не получены", "не пришли",
        "не пришло", "не пришел", "не дошли", "не дошло", "не дошел", "не скачивается",
        "не скачиваются", "не удалось скачать", "не открывается", "не открываются", "не открылся",
        "не открылись", "не удалось открыть", "не распаковывается", "архив поврежден",
        "файл поврежден", "файлы повреждены", "без вложения", "нет вложения", "вложения нет",
        "not received", "didn't receive", "did not receive", "cannot open", "can't open", "corrupted")

    def __post_init__(self) -> None:
        if self.remind_after_hours <= 0:
            raise ConfigError("delivery.remind_after_hours: must be a positive number of working hours")

    @property
    def remind_after_minutes(self) -> int:
        return max(1, round(self.remind_after_hours * 60))


def _check_listen(section: str, host: str, port: int) -> None:
    if not host or not _host_or_network(host.lower()):
        raise ConfigError(f"{section}.host: not a host name or IP address: {host!r}")
    if not 0 < port < 65536:
        raise ConfigError(f"{section}.port: expected 1-65535, got {port!r}")


@dataclass(frozen=True)
class WebConfig:
    """The supervisors' board (``mailbot/web``): read-only pages, log-in by a mailed link.

    ``base_url`` is where people reach it (behind the reverse proxy): the login
    links in mail point there, never at the Host a request named. Empty: the
    listen address (development). ``supervisors`` are staff logins who see
    everything, besides every staff member who is someone's supervisor.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8470
    base_url: str = ""  # e.g. https://support-board.example.ru
    secure_cookies: bool = False  # true behind TLS: cookies are Secure (and __Host- named)
    session_hours: float = 12.0  # a session ends this long after the log-in (or at logout)
    link_minutes: float = 15.0  # a login link works once, within this time
    login_window_minutes: float = 15.0  # the window of the two limits below
    login_limit_per_address: int = 3  # link requests per address in the window
    login_limit_per_client: int = 20  # link requests per client IP address in the window
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)  # proxies whose X-Forwarded-For counts
    supervisors: tuple[str, ...] = ()  # staff logins who see everything
    page_size: int = 50

    def __post_init__(self) -> None:
        _check_listen("web", self.host, self.port)
        base = self.base_url.rstrip("/")
        if base and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", base):
            raise ConfigError(f"web.base_url: expected http(s)://host[/path], got {self.base_url!r}")
        object.__setattr__(self, "base_url", base)
        for key in ("session_hours", "link_minutes", "login_window_minutes"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"web.{key}: must be positive, got {getattr(self, key)!r}")
        for key in ("login_limit_per_address", "login_limit_per_client", "page_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"web.{key}: must be at least 1, got {getattr(self, key)!r}")

    @property
    def public_url(self) -> str:
        """Where people reach the board: ``base_url``, or the listen address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.base_url or f"http://{host}:{self.port}"


@dataclass(frozen=True)
class MonitoringConfig:
    """``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` on a listen address of their
    own, without log-in: keep it on localhost or a monitoring network."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9470
    stuck_minutes: float = 10.0  # /readyz: the oldest pending mail older than this is a stuck backlog

    def __post_init__(self) -> None:
        _check_listen("monitoring", self.host, self.port)
        if self.stuck_minutes <= 0:
            raise ConfigError(f"monitoring.stuck_minutes: must be positive, got {self.stuck_minutes!r}")


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    dev: DevConfig = field(default_factory=DevConfig)
    sla: SlaConfig = field(default_factory=SlaConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    staff: StaffConfig = field(default_factory=StaffConfig)
    workflow: WorkflowConfig = field(default_factory=WorkflowConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    ddi: DdiConfig = field(default_factory=DdiConfig)
    web: WebConfig = field(default_factory=WebConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    oauth2: OAuth2Config = field(default_factory=OAuth2Config)
    state_dir: str = ".mailbot"  # embedded PostgreSQL data and other local state
    timezone: str = "Europe/Moscow"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"timezone: unknown time zone {self.timezone!r}") from None
        if self.imap.refresh_token:
            raise ConfigError("imap.refresh_token: the support account's refresh token is "
                              "oauth2.refresh_token ([imap.tp2] refresh_token: the ТП2 account's)")
        if self.imap.host and "oauth2" in (self.imap.auth, self.smtp.auth):
            self.oauth2.check_complete()

    @property
    def uses_oauth2(self) -> bool:
        """Whether IMAP or SMTP logs in with OAuth2 (on a real mail server)."""
        return bool(self.imap.host) and "oauth2" in (self.imap.auth, self.smtp.auth)

    @property
    def embedded_mail(self) -> bool:
        return not self.imap.host

    @property
    def own_addresses(self) -> tuple[str, ...]:
        s = self.support
        return tuple(a.lower() for a in (s.address, s.tp1_address, s.tp2_address, s.note_address)
                     if a)


def load_config(path: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load the config from ``path`` (or ``$MAILBOT_CONFIG``) and the environment."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("MAILBOT_CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return _build(Config, data, environ, prefix="")


def _build(cls: type, data: Mapping[str, Any], environ: Mapping[str, str], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    known = {f.name for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        plain = key.removesuffix("_file")
        if key not in known and plain not in known:
            raise ConfigError(f"{prefix}{key}: unknown setting")
    values: dict[str, Any] = {}
    for f in fields(cls):
        key, typ = prefix + f.name, hints[f.name]
        if is_dataclass(typ):
            values[f.name] = _build(typ, data.get(f.name, {}), environ, key + ".")
            continue
        env_name = "MAILBOT_" + key.replace(".", "_").upper()
        if env_name in environ:
            values[f.name] = _convert(key, environ[env_name], typ, from_env=True)
        elif env_name + "_FILE" in environ:
            values[f.name] = _read_secret(key, environ[env_name + "_FILE"])
        elif f.name in data:
            values[f.name] = _convert(key, data[f.name], typ, from_env=False)
        elif f.name + "_file" in data:
            values[f.name] = _read_secret(key, data[f.name + "_file"])
    return cls(**values)


def _read_secret(key: str, path: Any) -> str:
    try:
        return Path(str(path)).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}_file: cannot read {path}: {exc.strerror}") from None


def _convert(key: str, value: Any, typ: Any, *, from_env: bool) -> Any:
    origin = typing.get_origin(typ)
    if origin is tuple:
        # a string (environment, or a TOML string) is a comma-separated list: "a, b" = ["a", "b"]
        items = [i for i in value.split(",") if i.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(str(i).strip() for i in items)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_env and str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if from_env and str(value).lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = typ(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if number < 0:
            raise ConfigError(f"{key}: must not be negative, got {value!r}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def with_overrides(config: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with some section fields replaced (for embedded setups and tests)."""
    changes = {name: replace(getattr(config, name), **values) for name, values in sections.items()}
    return replace(config, **changes)


__all__ = ["ClassifyConfig", "Config", "ConfigError", "MonitoringConfig", "OAuth2Config", "SlaConfig",
           "WebConfig",
           "load_config", "with_overrides"]
