"""The one config loader: a TOML file plus ``MAILBOT_*`` environment overrides.

Every setting has a default, so mailbot runs with no file at all (embedded
PostgreSQL and development mail server). An override ``MAILBOT_<SECTION>_<KEY>``
replaces ``[section] key`` from the file; ``MAILBOT_DATABASE_URL`` is the usual
way to point at a real database. Secrets may come from ``<key>_file`` (a path
whose content is the value). A wrong value raises :class:`ConfigError` whose
message is one line naming the key.
"""
from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping


class ConfigError(Exception):
    """A config value is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""  # postgresql://… ; empty = embedded PostgreSQL under state_dir


@dataclass(frozen=True)
class ImapConfig:
    host: str = ""  # empty = embedded development mail server
    port: int = 993
    ssl: bool = True
    starttls: bool = False
    username: str = ""
    password: str = ""
    folders: tuple[str, ...] = ("INBOX",)
    processed_folder: str = "Processed"
    idle: bool = True
    poll_interval: float = 30.0  # seconds, when IDLE is off or unsupported
    idle_timeout: float = 600.0  # re-issue IDLE after this many seconds
    fetch_batch: int = 50


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""  # empty = embedded development mail server
    port: int = 25
    ssl: bool = False
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    max_attempts: int = 10
    retry_base: float = 30.0  # seconds; doubles on every failed attempt


@dataclass(frozen=True)
class SupportConfig:
    address: str = "support@localhost"  # customers write here; replies come from here
    name: str = "Техническая поддержка"
    tp1_address: str = "tp1@localhost"  # ТП1 group: new-request notifications
    tp2_address: str = "tp2@localhost"  # ТП2 mailbox (escalations)
    request_prefix: str = "ТП"
    incident_prefix: str = "INC"
    ack_limit_per_hour: int = 5  # acknowledgements per sender per hour


@dataclass(frozen=True)
class LimitsConfig:
    max_message_bytes: int = 50 * 1024 * 1024
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_attachments: int = 50


@dataclass(frozen=True)
class DevConfig:
    """The embedded development mail server (used when imap.host is empty)."""

    imap_port: int = 4143
    smtp_port: int = 4025
    http_port: int = 4080
    password: str = "secret"


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    dev: DevConfig = field(default_factory=DevConfig)
    state_dir: str = ".mailbot"  # embedded PostgreSQL data and other local state
    timezone: str = "Europe/Moscow"
    log_level: str = "INFO"

    @property
    def embedded_mail(self) -> bool:
        return not self.imap.host

    @property
    def own_addresses(self) -> tuple[str, ...]:
        s = self.support
        return tuple(a.lower() for a in (s.address, s.tp1_address, s.tp2_address) if a)


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
        items = value.split(",") if from_env and isinstance(value, str) else value
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


__all__ = ["Config", "ConfigError", "load_config", "with_overrides"]
