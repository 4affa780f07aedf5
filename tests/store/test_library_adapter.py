"""relay/store/library.py, the one room that reaches inside eventsourcing: fails first if the library moves.

Two kinds of check: the internals it calls still exist with the signatures it
calls them by (so an upgrade fails here, by name, rather than in the writer),
and a behavioural round trip through a real SQLite file (saved events load
back, snapshots are taken at the interval, the library's own ``save`` gives
the same stored events). A last check keeps the reach in this one room: no
other module of relay names those internals.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import eventsourcing.application as es_app
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent

from relay.application import RelayApp
from relay.commands import HeartbeatOrchestrator, RegisterOrchestrator
from relay.config import Settings
from relay.domain.orchestrator import Orchestrator
from relay.store import store_env
from relay.store.library import recorder_kind, save_aggregates

RELAY = Path(__file__).resolve().parents[2] / "relay"
INTERNALS = ("_record", "_notify", "_take_snapshots", "ProcessingEvent")


def _app(tmp_path: Path) -> RelayApp:
    return RelayApp(store_env(Settings(data_dir=tmp_path)))


def _params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_the_internals_we_call_still_have_their_shape() -> None:
    assert _params(Application._record) == ["self", "processing_event"]
    assert _params(Application._notify) == ["self", "recordings"]
    assert _params(Application.notify) == ["self", "new_events"]
    assert _params(Application.save)[:2] == ["self", "objs"]
    pe: ProcessingEvent[object] = ProcessingEvent()
    assert pe.events == [] and pe.aggregates == {}  # the two collections we fill by hand
    assert {"tracking", "saved_kwargs"} <= set(vars(pe))  # what _record reads from it
    # The exception we catch by type is the library's public one.
    assert es_app.AggregateNotFoundError is AggregateNotFoundError


def test_save_round_trips_and_matches_the_librarys_own_save(tmp_path: Path) -> None:
    ours = _app(tmp_path / "ours")
    theirs = _app(tmp_path / "theirs")
    for app, save in ((ours, "adapter"), (theirs, "library")):
        for at, cmd in enumerate(
            [
                RegisterOrchestrator.of("o1", "h", "/srv", ["claude"], [], {}, "hash", 1_000),
                HeartbeatOrchestrator("o1", 2_000),
                HeartbeatOrchestrator("o1", 3_000),
            ]
        ):
            _, aggs = app.execute(cmd)
            if save == "adapter":
                recordings = save_aggregates(app, tuple(aggs), app.snapshotting_intervals)
            else:
                recordings = Application.save(app, *aggs)
            assert recordings and recordings[-1].notification.id >= at + 1

    def stored(app: RelayApp) -> list[tuple[str, dict[str, object]]]:
        notes = app.recorder.select_notifications(start=None, limit=100)
        decoded = [(n.topic, app.mapper.transcoder.decode(n.state)) for n in notes]
        return [(topic, {k: v for k, v in state.items() if k != "timestamp"}) for topic, state in decoded]

    assert stored(ours) == stored(theirs)
    again = _app(tmp_path / "ours")
    loaded = again.repository.get(Orchestrator.create_id("o1"))
    assert loaded.version == ours.orchestrator("o1").version
    assert loaded.last_seen == 3_000


def test_snapshots_are_taken_from_the_live_copy_at_the_interval(tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.snapshotting_intervals = {Orchestrator: 3}
    _, aggs = app.execute(RegisterOrchestrator.of("o1", "h", "/srv", ["claude"], [], {}, "hash", 1))
    app.save(*aggs)
    oid = Orchestrator.create_id("o1")
    assert app.snapshots is not None
    for at in range(2, 8):
        _, aggs = app.execute(HeartbeatOrchestrator("o1", at))
        app.save(*aggs)
    versions = [s.originator_version for s in app.snapshots.get(oid)]
    assert versions and all(v % 3 == 0 for v in versions), versions


def test_a_missing_aggregate_is_the_librarys_exception(tmp_path: Path) -> None:
    app = _app(tmp_path)
    try:
        app.repository.get(Orchestrator.create_id("nobody"))
    except AggregateNotFoundError:
        pass
    else:
        raise AssertionError("the library no longer raises AggregateNotFoundError")
    assert app.find(Orchestrator, "nobody") is None


def test_recorder_kind_names_the_sqlite_recorder(tmp_path: Path) -> None:
    assert recorder_kind(_app(tmp_path).recorder) == "sqlite"
    assert recorder_kind(RelayApp().recorder) == "other"  # the in-memory (POPO) recorder


def test_the_sqlite_datastore_we_query_directly(tmp_path: Path) -> None:
    """relay/audit/log.py reads one aggregate's positions with SQL through ``recorder.datastore``."""
    app = _app(tmp_path)
    with app.recorder.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
        c.execute("SELECT 1")
        assert c.fetchone() is not None


def test_no_other_module_reaches_into_the_library() -> None:
    """Only relay/store/library.py names the library's private steps of ``save``."""
    # A call on anything but ``self`` (an application), an override of the library's
    # own steps (by their parameter names), or the class they pass around.
    pattern = re.compile(
        r"(?<!self)\.(_record|_notify|_take_snapshots)\("
        r"|def (_record|_notify|_take_snapshots)\(self, (processing_event|recordings)"
        r"|\bProcessingEvent\b"
    )
    offenders = [
        str(p.relative_to(RELAY))
        for p in RELAY.rglob("*.py")
        if p.name != "library.py" and pattern.search(p.read_text())
    ]
    assert offenders == [], offenders
    assert all(name in (RELAY / "store" / "library.py").read_text() for name in INTERNALS[:2])
