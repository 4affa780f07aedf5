"""The library attributes relay's PostgreSQL store relies on: fails here, by name, if they move.

relay/store/library.py holds the reaches into the library's save path; the
PostgreSQL store (relay/store/postgres.py: the recorders with fail-fast
retries and ``exclusive()``; relay/store/archive.py and archiver.py: SQL on
the log's own database) leans on recorder and datastore attributes that are
public-looking but undocumented. Each is asked for here on a real log.
"""

from __future__ import annotations

from pathlib import Path

from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder

from relay.application import RelayApp
from relay.commands import HeartbeatOrchestrator, RegisterOrchestrator
from relay.config import Settings
from relay.store import store_env
from relay.store.library import recorder_kind


def test_the_retry_wrapped_methods_we_unwrap_are_still_wrapped() -> None:
    """relay/store/postgres.py replaces the library's retry decorator by taking ``__wrapped__``."""
    for method in (
        PostgresApplicationRecorder.insert_events,
        PostgresApplicationRecorder.select_notifications,
        PostgresApplicationRecorder.max_notification_id,
        PostgresAggregateRecorder.select_events,
    ):
        assert callable(getattr(method, "__wrapped__", None)), method


def test_the_recorder_and_datastore_attributes_we_use(tmp_path: Path, log_dsn: str) -> None:
    app = RelayApp(store_env(Settings(store="postgres", postgres_dsn=log_dsn, data_dir=tmp_path)))
    try:
        recorder = app.recorder
        assert recorder_kind(recorder) == "postgres"
        assert getattr(recorder, "exclusive", None) is not None  # ours, over the library's lock statements
        assert recorder.lock_table_statements  # type: ignore[attr-defined]
        assert isinstance(recorder.events_table_name, str)  # type: ignore[attr-defined]
        ds = recorder.datastore  # type: ignore[attr-defined]
        assert ds.schema and ds.schema != "public"  # the test's own schema (tests/README.md rule 4)
        assert ds.pool is not None
        with ds.transaction(commit=False) as curs:
            curs.execute("SELECT 1")
            assert curs.fetchone() is not None
        with ds.get_connection() as conn:
            assert conn is not None
        # And the round trip through exclusive(): load, decide, save under the lock.
        _, aggs = app.execute(RegisterOrchestrator.of("o1", "h", "/srv", ["claude"], [], {}, "0" * 64, 1_000))
        app.save(*aggs)
        with recorder.exclusive():  # type: ignore[attr-defined]
            _, aggs = app.execute(HeartbeatOrchestrator("o1", 2_000))
            recordings = app.save(*aggs)
        assert recordings[-1].notification.id == recorder.max_notification_id()
    finally:
        app.close()
