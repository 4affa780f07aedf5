"""The reaper's own state in the log: suspended in a mass outage, and resumed.

One aggregate for the whole log, like the log seal. Suspension is a fact that
every relay node must agree on (they all reap), and that an operator must see
afterwards in the audit trail, so it is an event, not a flag in memory. The
rule that decides when to suspend lives in relay/domain/outage.py.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

REAPER_KEY = "relay:reaper"


class Reaper(Aggregate):
    """Whether reaping is suspended, and since when it last resumed."""

    TOPIC = "Reaper"

    class Event(Aggregate.Event):
        TOPIC = "ReaperEvent"

    @staticmethod
    def create_id(*_: Any, **__: Any) -> UUID:
        """One reaper per log, found without a lookup."""
        return uuid5(NAMESPACE_URL, REAPER_KEY)

    class Created(Aggregate.Created, Event):
        """The reaper's record began (on its first suspension)."""

        TOPIC = "ReaperCreated"
        class_version = 1
        at: int

    @event(Created)
    def __init__(self, at: int) -> None:
        self.suspended = False
        self.resumed_at = 0

    def suspend(self, would_reap: int, online: int, at: int) -> bool:
        """Stop reaping: reaping ``would_reap`` of ``online`` at once looks like our own outage."""
        if self.suspended:
            return False
        self._suspended(would_reap=would_reap, online=online, at=at)
        return True

    class Suspended(Event):
        """Reaping stopped: ``would_reap`` of ``online`` went silent at once (ADR 0019)."""

        TOPIC = "ReapSuspended"
        class_version = 1
        would_reap: int
        online: int
        at: int

    @event(Suspended)
    def _suspended(self, would_reap: int, online: int, at: int) -> None:
        self.suspended = True

    def resume(self, at: int) -> bool:
        """Reap again; nothing is reaped for silence before ``at`` plus stale-after."""
        if not self.suspended:
            return False
        self._resumed(at=at)
        return True

    class Resumed(Event):
        """Reaping resumed; silence before ``at`` plus stale-after never counts."""

        TOPIC = "ReapResumed"
        class_version = 1
        at: int

    @event(Resumed)
    def _resumed(self, at: int) -> None:
        self.suspended = False
        self.resumed_at = at


REAPER_ID = Reaper.create_id()
