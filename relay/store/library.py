"""Every reach into the eventsourcing library's internals, in one room.

The relay uses the library's public API (``Application``, ``repository.get``,
``recorder.select_notifications``, ``Snapshot.take``, ``AggregateNotFoundError``)
wherever one exists. Two things have none, and are done here only:

- **Saving without the runtime-protocol checks.** ``Application.save`` asks
  ``isinstance`` of two ``typing.Protocol`` classes for every object saved
  (``ProcessingEvent.collect_events``), tens of µs each on Python 3.11: about
  a third of the writer's time per heartbeat under group commit
  (docs/benchmarks.md). Ours are all ``Aggregate`` subclasses, so we collect
  their events directly and then run the library's own steps, ``_record``,
  (our) snapshots and ``_notify``, in the order ``Application.save`` does.
- **Snapshotting the live aggregate.** The library's ``_take_snapshots``
  replays the aggregate from the store to snapshot it, an extra read on the
  write path; ours is already in memory.

tests/store/test_library_adapter.py fails if the library changes any of
these internals (their names, signatures, and a save/load round trip), so an
upgrade of eventsourcing breaks one test file, not the writer at run time.

Not moved here, and why: the stores' own SQL on the log's database
(``recorder.datastore``: relay/store/postgres.py, archive.py, archiver.py,
relay/audit/log.py) and relay/store/postgres.py's recorders, which take the
library's methods without its retry decorator (``__wrapped__``). They are
the store adapters themselves; the attributes they lean on are checked by
tests/store/test_library_adapter.py (SQLite) and
tests/postgres/test_library_adapter_postgres.py (PostgreSQL).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot

log = logging.getLogger(__name__)

__all__ = ["AggregateNotFoundError", "recorder_kind", "save_aggregates"]


def recorder_kind(recorder: Any) -> str:
    """``"postgres"``, ``"sqlite"`` or ``"other"``: which of the library's recorders this is.

    By class name along the MRO, so that asking never imports psycopg (an
    optional dependency) on a SQLite relay.
    """
    names = {k.__name__ for k in type(recorder).__mro__}
    if "PostgresApplicationRecorder" in names:
        return "postgres"
    if "SQLiteApplicationRecorder" in names:
        return "sqlite"
    return "other"


def save_aggregates(
    app: Application,
    aggregates: tuple[Aggregate, ...],
    snapshotting_intervals: Mapping[type[Aggregate], int],
) -> list[Any]:
    """``Application.save(*aggregates)`` minus its per-object protocol checks; the recordings.

    Same steps as the library's ``save``: record (one transaction), snapshot,
    notify (its ``_notify`` for processing, then the deprecated ``notify``).
    """
    processing_event: ProcessingEvent[Any] = ProcessingEvent()
    events = processing_event.events
    by_id = processing_event.aggregates
    for agg in aggregates:
        events.extend(agg.collect_events())
        by_id[agg.id] = agg
    recordings: list[Any] = app._record(processing_event)
    take_live_snapshots(app, processing_event.events, by_id, snapshotting_intervals)
    app._notify(recordings)
    app.notify(processing_event.events)  # the library's deprecated hook, kept for parity
    return recordings


def take_live_snapshots(
    app: Application,
    events: list[Any],
    aggregates: Mapping[UUID, Any],
    snapshotting_intervals: Mapping[type[Aggregate], int],
) -> None:
    """Snapshot each live aggregate whose new version hit its interval.

    A failed snapshot only slows a later load, so it never fails a write that
    already committed.
    """
    if app.snapshots is None:
        return
    due: dict[UUID, Aggregate] = {}
    for ev in events:
        agg = aggregates.get(ev.originator_id)
        if agg is None:
            continue
        interval = snapshotting_intervals.get(type(agg))
        if interval and ev.originator_version % interval == 0:
            due[agg.id] = agg
    if not due:
        return
    try:
        app.snapshots.put([Snapshot.take(agg) for agg in due.values()])
    except Exception:
        log.warning("could not store snapshots", exc_info=True)
