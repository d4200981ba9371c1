"""What a session has added but not yet written, so that a batch needs no flush per message.

The processor writes a whole batch of mail in one flush. Until then, a later
message of the batch must still see what an earlier one created (its request,
its messages, the acknowledgement counted by the rate limit, a new contact).
Reads in :mod:`mailbot.register.lookup` therefore ask the database without flushing and
add what :class:`Unflushed` holds: every object added to the session since its
last flush, by model. A flush or a rollback empties it, together with the
read cache kept beside it (the database has changed under the cache).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

T = TypeVar("T")


class Unflushed:
    """Objects added to ``session`` since its last flush, and reads cached until then."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._added: dict[type, list[Any]] = defaultdict(list)
        self._cache: dict[Hashable, Any] = {}
        self._groups: dict[tuple[type, Callable], tuple[int, dict]] = {}
        self._listeners = (("transient_to_pending", self._add), ("after_flush", self._reset),
                           ("after_soft_rollback", self._reset))
        for name, listener in self._listeners:
            event.listen(session, name, listener)

    def close(self) -> None:
        """Stop following the session."""
        for name, listener in self._listeners:
            if event.contains(self.session, name, listener):
                event.remove(self.session, name, listener)

    def added(self, model: type[T]) -> list[T]:
        """The objects of ``model`` added and not yet flushed, oldest first."""
        return self._added.get(model, [])

    def by(self, model: type[T], keys: Callable[[T], Iterable[Hashable]]) -> dict[Hashable, list[T]]:
        """The added objects of ``model`` grouped by the keys ``keys`` gives each (kept up to date).

        ``keys`` must be the same function object on every call (it names the grouping).
        """
        seen, groups = self._groups.get((model, keys), (0, {}))
        added = self._added.get(model, [])
        for instance in added[seen:]:
            for key in keys(instance):
                groups.setdefault(key, []).append(instance)
        self._groups[model, keys] = (len(added), groups)
        return groups

    def cached(self, key: Hashable, read: Callable[[], T]) -> T:
        """``read()``, remembered until the session flushes or rolls back."""
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def has(self, key: Hashable) -> bool:
        return key in self._cache

    def get(self, key: Hashable) -> Any:
        """What was read for ``key`` (None when nothing was)."""
        return self._cache.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        """Remember what the database said for ``key`` (until the session flushes or rolls back)."""
        self._cache[key] = value

    def _add(self, _session: Session, instance: Any) -> None:
        self._added[type(instance)].append(instance)

    def _reset(self, *_args: Any) -> None:
        self._added.clear()
        self._cache.clear()
        self._groups.clear()
