"""The versions the log is known to hold, published by whoever applies it.

Several relay nodes may write one PostgreSQL log (ADR 0008). The writer keeps
live copies of aggregates; when another node appended to one since we loaded
it, our copy is behind and must be loaded again before anything is decided
on it. The tail follower learns of those events when it fetches them from
the store (our own writer's commits are handed over and never fetched, unless
a fetch races the hand-over), and publishes their versions here; the writer
thread reads them in ``RelayApp.find``.

Before ADR 0030 the application called back into the read models from the
writer thread for this; now the two threads share only this small board,
under a lock, and neither knows the other's classes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from uuid import UUID


class KnownVersions:
    """aggregate id -> the newest version seen stored; written on the loop, read by the writer."""

    __slots__ = ("_lock", "_versions")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[UUID, int] = {}

    def publish(self, seen: Iterable[tuple[UUID, int]]) -> None:
        """Versions found stored (by the follower, after a fetch)."""
        with self._lock:
            versions = self._versions
            for aggregate_id, version in seen:
                if version > versions.get(aggregate_id, 0):
                    versions[aggregate_id] = version

    def newer_than(self, aggregate_id: UUID, version: int) -> bool:
        """Whether the log holds a newer version than ``version``; forgets what is no longer news."""
        if not self._versions:
            # The usual case (one node, or nothing fetched): no lock on the writer's hot
            # path. Reading a dict's size is atomic; a publish racing this read is as if
            # it had come a moment later, which the follower's ordering allows (it
            # publishes before it says "applied", not before the writer looks).
            return False
        with self._lock:
            known = self._versions.get(aggregate_id)
            if known is None:
                return False
            if known > version:
                return True
            del self._versions[aggregate_id]  # our copy has caught up: nothing to remember
            return False

    def __len__(self) -> int:
        return len(self._versions)
