"""The statuses of an incident, and the names staff give them (commands by mail, the CLI)."""
from __future__ import annotations

STATUSES = ("new", "investigating", "solved", "closed", "duplicate")
# how staff may name a status (commands by mail, the CLI), lower case, ё as е
STATUS_NAMES = {
    "new": "new", "новый": "new", "новая": "new",
    "investigating": "investigating", "исследуется": "investigating", "в работе": "investigating",
    "расследуется": "investigating", "воспроизводится": "investigating",
    "solved": "solved", "решен": "solved", "решено": "solved", "решение найдено": "solved",
    "closed": "closed", "закрыт": "closed", "закрыто": "closed",
    "duplicate": "duplicate", "дубликат": "duplicate", "дубль": "duplicate",
}


def status_named(name: str) -> str | None:
    """The status a person means by ``name`` (Russian or English), or None."""
    return STATUS_NAMES.get(" ".join(name.lower().replace("ё", "е").split()))
