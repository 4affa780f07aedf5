"""The log seal: periodic checkpoints of the rolling hash, stored in the log itself.

One aggregate for the whole log. Each ``LogSealed`` event says: "the events
from ``first`` to ``upto`` (``count`` of them) chain to ``hash``", plus a short
digest per event (relay/audit/chain.py). Seals are facts about the log, not
about any agent or orchestrator, so the read models ignore them; the relay's
writer records one every ``seal_every`` events, and ``relay audit verify``
recomputes them (docs/audit.md says what that proves).
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

SEAL_KEY = "relay:log-seal"


class LogSeal(Aggregate):
    """The chain of seals over the log; its versions count the seals (plus one)."""

    TOPIC = "LogSeal"

    class Event(Aggregate.Event):
        TOPIC = "LogSealEvent"

    @staticmethod
    def create_id(**_: Any) -> UUID:
        """One seal aggregate per log, found without a lookup."""
        return uuid5(NAMESPACE_URL, SEAL_KEY)

    @event("Opened", topic="LogSealOpened")
    def __init__(self, at: int) -> None:
        self.upto = 0
        self.hash = ""
        self.opened_at = at

    def seal(self, first: int, upto: int, count: int, hash: str, digests: str, at: int) -> None:
        """Record that ``count`` events from ``first`` to ``upto`` chain to ``hash``."""
        if upto <= self.upto:
            raise ValueError(f"seal up to {upto} does not extend the last one ({self.upto})")
        self._sealed(first=first, upto=upto, count=count, hash=hash, digests=digests, at=at)

    @event("Sealed", topic="LogSealed")
    def _sealed(self, first: int, upto: int, count: int, hash: str, digests: str, at: int) -> None:
        self.upto = upto
        self.hash = hash


SEAL_ID = LogSeal.create_id()
SEAL_TOPICS = frozenset({"LogSealOpened", "LogSealed"})
