"""Stored events: small, orjson-encoded, and they round-trip through a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from relay.application import RelayApp
from relay.commands import HeartbeatOrchestrator, RegisterOrchestrator
from relay.config import Settings
from relay.domain.orchestrator import Orchestrator
from relay.projections.follower import load_read_models
from relay.store import store_env
from relay.store.versions import KnownVersions


def _app(tmp_path: Path) -> RelayApp:
    return RelayApp(store_env(Settings(data_dir=tmp_path)))


def _register(app: RelayApp, oid: str = "o1", at: int = 1_000) -> None:
    _, aggs = app.execute(
        RegisterOrchestrator.of(oid, "h", "/srv", ["claude"], ["K"], {"x": [1, 2]}, "hash", at)
    )
    app.save(*aggs)


def test_heartbeat_is_at_most_120_bytes_of_state_and_topic(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _register(app)
    _, aggs = app.execute(HeartbeatOrchestrator("o1", 1_795_000_000_000))
    rec = app.save(*aggs)[0]
    n = rec.notification
    size = len(n.state) + len(n.topic)
    assert size <= 120, (size, n.topic, n.state)
    assert n.state.startswith(b'{"timestamp":')


def test_events_round_trip_through_the_store(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _register(app)
    stored = app.recorder.select_notifications(start=1, limit=10)
    event = app.mapper.to_domain_event(stored[0])
    assert type(event).TOPIC == "OrchestratorRegistered"  # type: ignore[attr-defined]
    assert event.meta == {"x": [1, 2]}  # type: ignore[attr-defined]
    assert event.timestamp.tzinfo is not None
    fresh = RelayApp(store_env(Settings(data_dir=tmp_path)))
    agg = fresh.repository.get(Orchestrator.create_id("o1"))
    assert (agg.hostname, agg.env_keys, agg.last_seen) == ("h", ["K"], 1_000)


def test_snapshots_of_live_aggregates_load_back(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _register(app)
    for i in range(1, 1_100):
        _, aggs = app.execute(HeartbeatOrchestrator("o1", 1_000 + i))
        app.save(*aggs)
    assert app.snapshots is not None
    snaps = app.snapshots.get(Orchestrator.create_id("o1"))
    assert [s.originator_version for s in snaps] == [500, 1000]
    fresh = RelayApp(store_env(Settings(data_dir=tmp_path)))
    agg = fresh.repository.get(Orchestrator.create_id("o1"))
    assert (agg.version, agg.last_seen, agg.status) == (1_100, 2_099, "online")


def test_read_models_rebuilt_from_the_store_match_the_fold(tmp_path: Path) -> None:
    app = _app(tmp_path)
    _register(app, "o1")
    _register(app, "o2", at=2_000)
    rm, how = load_read_models(app, None)
    assert how == "rebuilt from position 0"
    assert rm.position == 2
    assert [o["id"] for o in rm.orchestrators_sorted()] == ["o1", "o2"]


def test_a_batch_never_drops_an_earlier_commands_pending_events(tmp_path: Path) -> None:
    """Another node's write seen mid-batch must not swap out a copy with pending events."""
    app = _app(tmp_path)
    _register(app)
    _, first = app.execute(HeartbeatOrchestrator("o1", 2_000))
    app.known_versions = KnownVersions()
    app.known_versions.publish([(first[0].id, 99)])  # the follower has seen a newer version
    _, second = app.execute(HeartbeatOrchestrator("o1", 3_000))
    assert first[0] is second[0]
    assert [e.at for e in second[0].pending_events] == [2_000, 3_000]  # type: ignore[attr-defined]
