"""The application: the log's storage, and the live aggregates the use cases decide on.

``RelayApp`` is the eventsourcing ``Application`` (the store, the mapper, the
snapshots) plus the ``Aggregates`` port of relay/usecases.py: aggregates stay
in memory once loaded (``live``), so a heartbeat costs the same on an entity
with 100,000 earlier events as on a fresh one; the library's snapshots only
speed up the first load after a restart. ``execute`` hands a command to its
use case, which leaves new events pending on the aggregates; saving is the
writer's job, so that commands that arrive together commit together (ADR
0004). The use cases themselves live in relay/usecases.py (ADR 0030).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import PersistenceError, Transcoder
from eventsourcing.utils import EnvType

from relay import commands as c
from relay import usecases
from relay.domain.agent import Agent
from relay.domain.errors import StoreUnavailableError
from relay.domain.message import ACKED, DELETED, Message
from relay.domain.orchestrator import Orchestrator
from relay.domain.seal import LogSeal  # noqa: F401  (its stored topics must resolve)
from relay.store.library import save_aggregates
from relay.store.transcoder import OrjsonTranscoder
from relay.store.versions import KnownVersions
from relay.usecases import A, AnyAggregate, content_bytes

log = logging.getLogger(__name__)

EVICT_EVERY_MS = 60_000  # how often (domain time) settled messages are looked for


class RelayApp(Application):
    """The store and the live aggregates (the use cases' port); driven by one writer thread."""

    name = "Relay"
    snapshotting_intervals: ClassVar[dict[type[Aggregate], int]] = {
        Orchestrator: 500,
        Agent: 500,
    }
    log_section_size = 10_000

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        self.live: dict[UUID, AnyAggregate] = {}
        # The newest version of an aggregate that the log is known to hold, as
        # published by whoever applies the log (the tail follower). With several
        # relay nodes on one log, another node may have written since we loaded
        # our live copy; then we load it again rather than decide (or refuse) on
        # stale state. None: this app is the log's only writer (tests, tools).
        self.known_versions: KnownVersions | None = None
        # Settled messages leave ``live`` after this long (domain time; None: never).
        # They stay in the log; a later command that names one loads it again.
        self.keep_settled_ms: int | None = None
        self._settled: dict[UUID, int] = {}  # message aggregate id -> when it settled
        self._forgotten: set[UUID] = set()  # messages forgotten (ADR 0036), to leave ``live``
        self._next_eviction = 0

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def save(self, *objs: Any, **kwargs: Any) -> list[Any]:
        """``Application.save`` for our aggregates, without its runtime-protocol checks.

        Through relay/store/library.py (the one room that reaches inside the
        library; why it is faster is said there). Anything else (or keyword
        arguments) takes the library's own path.
        """
        if kwargs or not all(isinstance(o, Aggregate) for o in objs):
            return super().save(*objs, **kwargs)
        recordings = save_aggregates(self, objs, self.snapshotting_intervals)
        if self._forgotten:
            self._drop_forgotten()
        return recordings

    # -- loading -------------------------------------------------------------

    def find(self, cls: type[A], natural_id: str, at_least: int = 0) -> A | None:
        """The ``Aggregates`` port: the live copy, loaded from the store when missing or behind.

        Behind: older than ``at_least`` (what the caller saw) or than the version
        the follower last saw stored. Never swaps out a copy with undecided-upon
        pending events (an earlier command of this batch): they would be lost
        while that command is answered. Its save then clashes, and the writer
        decides the batch again.
        """
        aggregate_id = cls.create_id(natural_id)
        agg = self.live.get(aggregate_id)
        if agg is not None and not agg.pending_events:
            known = self.known_versions
            if agg.version < at_least or (known is not None and known.newer_than(aggregate_id, agg.version)):
                del self.live[aggregate_id]
                agg = None
        if agg is None:
            try:
                agg = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
            except PersistenceError as e:
                raise StoreUnavailableError(
                    f"the event store cannot be read right now ({type(e).__name__}: {e}); retry later"
                ) from e
            self.live[aggregate_id] = agg
        return agg  # type: ignore[return-value]

    def add(self, aggregate: Any) -> None:
        """The ``Aggregates`` port: a new aggregate is live from now on."""
        self.live[aggregate.id] = aggregate

    def orchestrator(self, orchestrator_id: str) -> Orchestrator:
        """The live orchestrator, or NotFoundError if it never existed or was removed."""
        return usecases.orchestrator(self, orchestrator_id)

    def agent(self, agent_id: str) -> Agent:
        """The live agent, or NotFoundError if it never existed or was removed."""
        return usecases.agent(self, agent_id)

    def message(self, message_id: str) -> Message:
        """The live message, or NotFoundError if it was never sent or was forgotten."""
        return usecases.message(self, message_id)

    def orchestrator_of_agent(self, agent_id: str) -> Orchestrator | None:
        """The live orchestrator whose own agent record ``agent_id`` is, if any."""
        return usecases.orchestrator_of_agent(self, agent_id)

    def forget(self, aggregate_ids: list[UUID]) -> None:
        """Drop live copies whose pending state never reached the store."""
        for aggregate_id in aggregate_ids:
            self.live.pop(aggregate_id, None)

    def forget_pending(self) -> None:
        """Drop every live copy that holds events not yet stored.

        For when a decision failed part-way: which aggregates it had changed is
        unknown, and a copy ahead of the log must never be decided on again.
        """
        self.forget([i for i, agg in self.live.items() if agg.pending_events])

    # -- use cases -----------------------------------------------------------

    def execute(self, cmd: c.Command) -> tuple[Any, list[AnyAggregate]]:
        """Decide ``cmd`` (relay/usecases.py): its result and the aggregates with new pending events.

        Raises a RelayError (and leaves every aggregate untouched) when refused.
        """
        result, touched = usecases.decide(self, cmd)
        at = getattr(cmd, "at", None) or getattr(cmd, "now", None)
        if isinstance(at, int):
            for agg in touched:
                if isinstance(agg, Message):
                    if agg.forgotten:  # ADR 0036: leaves ``live`` once its event is stored
                        self._forgotten.add(agg.id)
                    elif agg.status in (ACKED, DELETED):
                        self._settled.setdefault(agg.id, at)
            if self.keep_settled_ms is not None and at >= self._next_eviction:
                self._next_eviction = at + EVICT_EVERY_MS
                self.evict_settled(at)
        return result, touched

    def evict_settled(self, now: int) -> list[UUID]:
        """Drop settled messages from ``live`` once ``keep_settled_ms`` has passed.

        Memory stays flat however many messages a relay has carried; nothing
        leaves the log. A copy with pending events is never dropped.
        """
        keep = self.keep_settled_ms
        if keep is None:
            return []
        gone = [
            mid
            for mid, at in self._settled.items()
            if now - at >= keep
            and (agg := self.live.get(mid)) is not None
            and not agg.pending_events
        ]
        for mid in gone:
            del self.live[mid]
            del self._settled[mid]
        for mid in [m for m in self._settled if m not in self.live]:
            del self._settled[mid]
        return gone + self._drop_forgotten()

    def _drop_forgotten(self) -> list[UUID]:
        """Forgotten messages (ADR 0036) leave ``live`` once their ``Forgotten`` is stored."""
        gone = []
        for mid in list(self._forgotten):
            agg = self.live.get(mid)
            if agg is None or not agg.pending_events:
                self._forgotten.discard(mid)
                self._settled.pop(mid, None)
                if self.live.pop(mid, None) is not None:
                    gone.append(mid)
        return gone


# Re-exported for the callers that measured a message this way before the use cases moved.
__all__ = ["EVICT_EVERY_MS", "AnyAggregate", "RelayApp", "content_bytes"]
