"""Thinning: archived heartbeats become presence intervals, and the epoch root still proves.

A twin (a copy taken before archiving) keeps every heartbeat; the thinned
log must hold every other event unchanged, and intervals that account for
every thinned heartbeat exactly (entity, positions, versions, count, first
and last time, longest gap). The kept events and the subtree hashes must
recompute each epoch's sealed root, and any change to them must not.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import orjson
import pytest
from eventsourcing.persistence import Notification

from relay.application import RelayApp
from relay.audit.epochs import sealed_epochs
from relay.audit.log import AppLog
from relay.audit.replay import Replayer
from relay.clock import FakeClock
from relay.config import Settings
from relay.projections.follower import load_read_models
from relay.service import RelayService
from relay.store import segment, store_env
from relay.store.archiver import HEARTBEAT_TOPICS, THINNED_TOPICS, prove
from relay.store.segment import SegmentReader
from tests.loglasts.archivelog import archive_now, copy_data, fleet, open_reader, rows
from tests.loglasts.epochlog import run_relay

EPOCH = 300


@pytest.fixture(scope="module")
def thinned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, FakeClock]:
    base = tmp_path_factory.mktemp("thin")
    data, twin = base / "data", base / "twin"
    clock = run_relay(data, [fleet(1_400)], epoch_events=EPOCH, archive=False)
    copy_data(data, twin)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="0")
    return data, twin, clock


def test_thinned_segments_replace_full_ones_and_keep_every_other_event(thinned) -> None:
    data, twin, _ = thinned
    folder = data / "archive"
    assert not list(folder.glob("epoch-*.full"))
    thin = sorted(folder.glob("epoch-*.thin"))
    assert len(thin) >= 4
    _, reader = open_reader(data)
    twin_app = RelayApp(store_env(Settings(data_dir=twin)))
    covered = reader.covered_upto()
    want = [r for r in rows(AppLog(twin_app)) if r[0] > covered or r[3] not in THINNED_TOPICS]
    assert rows(reader) == want
    twin_app.close()


def test_intervals_account_for_every_thinned_heartbeat(thinned) -> None:
    data, twin, _ = thinned
    _, reader = open_reader(data)
    twin_app = RelayApp(store_env(Settings(data_dir=twin)))
    covered = reader.covered_upto()
    beats = [r for r in rows(AppLog(twin_app)) if r[0] <= covered and r[3] in HEARTBEAT_TOPICS]
    intervals = reader.intervals(0, covered)
    assert intervals
    by_entity: dict[str, list[tuple]] = {}
    for r in beats:
        by_entity.setdefault(r[1].hex, []).append(r)
    accounted = 0
    for iv in intervals:
        run = [r for r in by_entity[iv.originator_id] if iv.first_position <= r[0] <= iv.last_position]
        ats = [orjson.loads(r[4])["at"] for r in run]
        assert iv.count == len(run) == iv.last_version - iv.first_version + 1
        assert (run[0][0], run[-1][0]) == (iv.first_position, iv.last_position)
        assert (run[0][2], run[-1][2]) == (iv.first_version, iv.last_version)
        assert (ats[0], ats[-1]) == (iv.first_at, iv.last_at)
        assert iv.longest_gap_ms == max((b - a for a, b in itertools.pairwise(ats)), default=0)
        accounted += len(run)
    assert accounted == len(beats)
    twin_app.close()


def test_each_thinned_segment_recomputes_its_sealed_root_and_a_change_does_not(thinned) -> None:
    data, _, _ = thinned
    app, reader = open_reader(data)
    roots = {e.epoch: e.root for e in sealed_epochs(reader)}
    for path in sorted((data / "archive").glob("epoch-*.thin")):
        r = SegmentReader(path.read_bytes())
        assert r.root == roots[r.epoch]
        assert prove(r)
        assert r.cover and len(r.events()) < r.size
    r = SegmentReader(sorted((data / "archive").glob("epoch-*.thin"))[1].read_bytes())
    events = r.events()
    changed = [*events]
    e = changed[0]
    changed[0] = Notification(
        id=e.id, originator_id=e.originator_id, originator_version=e.originator_version,
        topic=e.topic, state=bytes(e.state).replace(b"}", b' }'),
    )

    def again(evs: list, cover: list, index: list | None = None) -> SegmentReader:
        return SegmentReader(
            segment.encode(
                epoch=r.epoch, first=r.first, last=r.last, size=r.size, root=r.root, at=r.at,
                events=evs, kind="thin", leaf_index=r.leaf_index if index is None else index,
                intervals=r.intervals, cover=cover,
            )
        )

    assert prove(again(events, r.cover))
    assert not prove(again(changed, r.cover))
    s, end, _h = r.cover[0]
    assert not prove(again(events, [(s, end, bytes(32)), *r.cover[1:]]))
    assert not prove(again(events[1:], r.cover, r.leaf_index[1:]))  # a kept event dropped
    app.close()


def test_read_models_rebuilt_from_position_0_over_thinned_epochs_equal_the_twins(thinned) -> None:
    data, twin, _ = thinned
    app, reader = open_reader(data)
    twin_app = RelayApp(store_env(Settings(data_dir=twin)))
    rm, _ = load_read_models(app, None, reader.folding())
    twin_rm, _ = load_read_models(twin_app, None)
    assert rm.to_state() == twin_rm.to_state()
    # As of each epoch's end too (?at=, SSE replays; runs never cross an epoch's
    # end); without the runs' ends the fold would not see the thinned heartbeats.
    for at in [e.last for e in reader.archive.entries()]:
        want = Replayer(AppLog(twin_app)).state_at(at).to_state()
        assert Replayer(reader.folding()).state_at(at).to_state() == want, at
    assert Replayer(reader).state_at(reader.covered_upto()).to_state() != want
    app.close()
    twin_app.close()


def test_the_log_api_returns_kept_events_with_gaps_and_the_intervals(thinned) -> None:
    data, _, clock = thinned

    async def main() -> tuple[list, list, int]:
        service = RelayService(Settings(data_dir=data, epoch_events=EPOCH, archive=False), clock=clock)
        await service.start(run_reaper=False)
        try:
            events, nxt = await service.read_log(0, 1000)
            return events, await service.read_intervals(0, nxt), nxt
        finally:
            await service.stop()

    events, intervals, nxt = asyncio.run(main())
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and positions[-1] == nxt
    assert len(positions) < positions[-1]  # gaps where heartbeats were
    assert intervals and all(0 < iv["firstPosition"] <= nxt for iv in intervals)
    assert {iv["entityId"] for iv in intervals} >= {"a0", "a1", "a2", "a3", "a4"}
    assert all(iv["entityKind"] == "agent" and iv["count"] >= 1 for iv in intervals)


def test_forever_never_thins_and_a_duration_thins_only_older_epochs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    clock = run_relay(data, [fleet(1_000)], epoch_events=EPOCH, archive=False)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="forever")
    assert not list((data / "archive").glob("*.thin"))
    clock.advance(3_600_000)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="2h")
    assert not list((data / "archive").glob("*.thin"))
    clock.advance(3_600_000)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="2h")
    assert list((data / "archive").glob("*.thin"))
    assert not list((data / "archive").glob("*.full"))
