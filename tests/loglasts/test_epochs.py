"""Epochs sealed by Merkle roots (relay/audit/epochs.py): written by the real writer on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from relay import chain, merkle
from relay.application import RelayApp
from relay.audit.epochs import EpochInfo, EpochSealer, epoch_leaf, sealed_epochs, tree_head
from relay.audit.log import SqliteLog
from relay.clock import FakeClock
from relay.config import Settings, SettingsError
from relay.domain.seal import LogEpochs
from relay.store import store_env
from tests.loglasts.epochlog import beats, run_relay, wait


def rows(data: Path, first: int, last: int) -> list[tuple[int, str, int, str, bytes]]:
    with sqlite3.connect(data / "relay.sqlite") as db:
        return [
            (r[0], r[1], r[2], r[3], bytes(r[4]))
            for r in db.execute(
                "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
                "WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
                (first, last),
            )
        ]


def recomputed_root(data: Path, e: EpochInfo) -> str:
    """The root straight from the SQLite rows, independent of the relay's readers."""
    leaves = [
        merkle.leaf_hash(chain.link(p, UUID(o), v, t, s)) for p, o, v, t, s in rows(data, e.first, e.last)
    ]
    assert len(leaves) == e.size
    return merkle.root(leaves).hex()


def test_epochs_close_at_exactly_n_events_and_chain(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_relay(data, [beats(330)], epoch_events=100, seal_every=0, archive=False)
    epochs = sealed_epochs(SqliteLog(data))
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert [(e.first, e.last, e.size) for e in epochs] == [(1, 100, 100), (101, 200, 100), (201, 300, 100)]
    previous = None
    for e in epochs:
        assert e.previous_root == previous
        assert recomputed_root(data, e) == e.root
        assert e.position > e.last  # the seal is an event of a later epoch
        previous = e.root
    # The recorder and the log reader agree on what was sealed.
    app = RelayApp(store_env(Settings(data_dir=data)))
    assert [(e.epoch, e.root) for e in sealed_epochs(app.recorder)] == [(e.epoch, e.root) for e in epochs]


def test_an_old_epoch_closes_by_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # 30 events, then an hour passes: the next commit closes the epoch though it is far from full.
    run_relay(
        data,
        [beats(30), wait(3_600_000), beats(3)],
        epoch_events=10_000,
        epoch_seconds=3600,
        seal_every=0,
        archive=False,
    )
    epochs = sealed_epochs(SqliteLog(data))
    assert len(epochs) == 1
    e = epochs[0]
    assert e.first == 1 and e.size == e.last >= 30
    assert recomputed_root(data, e) == e.root


def test_no_epoch_closes_before_its_time_or_size(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_relay(
        data,
        [beats(50), wait(3_599_000), beats(3)],
        epoch_events=10_000,
        epoch_seconds=3600,
        seal_every=0,
        archive=False,
    )
    assert sealed_epochs(SqliteLog(data)) == []


def test_a_restart_mid_epoch_seals_the_same_root(tmp_path: Path) -> None:
    # The open epoch is hashed from the store after a restart, so a relay
    # stopped halfway seals exactly what an uninterrupted one would.
    data = tmp_path / "data"
    clock = run_relay(data, [beats(60)], epoch_events=100, seal_every=0, archive=False)
    assert sealed_epochs(SqliteLog(data)) == []
    run_relay(data, [beats(60)], clock=clock, epoch_events=100, seal_every=0, archive=False)
    (e,) = sealed_epochs(SqliteLog(data))
    assert (e.first, e.last) == (1, 100)
    assert recomputed_root(data, e) == e.root


def test_epochs_and_rolling_seals_together(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_relay(data, [beats(250)], epoch_events=64, seal_every=20, archive=False)
    epochs = sealed_epochs(SqliteLog(data))
    assert len(epochs) >= 3
    for e in epochs:
        assert recomputed_root(data, e) == e.root


def test_two_writers_on_one_log_seal_each_epoch_once(tmp_path: Path) -> None:
    # Two sealers over one store, as two relay nodes: the one that loses the
    # race on the LogEpochs aggregate takes the winner's seal as its own.
    data = tmp_path / "data"
    run_relay(data, [beats(150)], epoch_events=1_000_000, seal_every=0, archive=False)
    env = store_env(Settings(data_dir=data))
    a, b = RelayApp(env), RelayApp(env)
    clock = FakeClock()
    sa = EpochSealer.load(a, 100, 3600, clock)
    sb = EpochSealer.load(b, 100, 3600, clock)
    sa.head = sb.head = a.recorder.max_notification_id()
    assert sa.seal(a) and sa.epoch == 1
    assert sb.seal(b) == []  # lost the race: nothing written
    assert (sb.epoch, sb.last, sb.root) == (1, 100, sa.root)
    assert len(sealed_epochs(SqliteLog(data))) == 1


def test_the_epoch_chain_refuses_gaps_and_forks() -> None:
    agg = LogEpochs(at=1)
    root = "ab" * 32
    with pytest.raises(ValueError):
        agg.seal_epoch(epoch=2, first=1, last=10, size=10, root=root, previous_root=None, at=2)
    with pytest.raises(ValueError):
        agg.seal_epoch(epoch=1, first=2, last=10, size=9, root=root, previous_root=None, at=2)
    agg.seal_epoch(epoch=1, first=1, last=10, size=10, root=root, previous_root=None, at=2)
    with pytest.raises(ValueError):
        agg.seal_epoch(epoch=2, first=11, last=20, size=10, root=root, previous_root="cd" * 32, at=3)
    with pytest.raises(ValueError):
        agg.seal_epoch(epoch=2, first=12, last=20, size=9, root=root, previous_root=root, at=3)
    agg.seal_epoch(epoch=2, first=11, last=20, size=10, root=root, previous_root=root, at=3)
    assert (agg.epoch, agg.last, agg.root) == (2, 20, root)


def test_the_checkpoint_tree_is_over_epoch_leaves() -> None:
    es = [EpochInfo(k, 10 * k - 9, 10 * k, 10, f"{k:02x}" * 32, None, 0) for k in range(1, 6)]
    size, root = tree_head(es)
    assert size == 5
    assert root == merkle.root([merkle.leaf_hash(epoch_leaf(e)) for e in es])
    # Any field of an epoch changes its leaf.
    assert epoch_leaf(es[0]) != epoch_leaf(EpochInfo(1, 1, 11, 10, es[0].root, None, 0))


def test_epoch_settings() -> None:
    s = Settings.from_env({"RELAY_EPOCH_EVENTS": "5000", "RELAY_EPOCH_SECONDS": "60"})
    assert (s.epoch_events, s.epoch_seconds) == (5000, 60.0)
    assert (Settings().epoch_events, Settings().epoch_seconds) == (1_000_000, 86_400.0)
    with pytest.raises(SettingsError):
        Settings.from_env({"RELAY_EPOCH_EVENTS": "-1"})
    with pytest.raises(SettingsError):
        Settings.from_env({"RELAY_EPOCH_SECONDS": "0"})
    from relay.cli import build_parser, settings_from

    args = build_parser().parse_args(["serve", "--epoch-events", "7", "--epoch-seconds", "9"])
    s = settings_from(args, {})
    assert (s.epoch_events, s.epoch_seconds) == (7, 9.0)


def test_integrity_error_is_what_a_lost_race_raises(tmp_path: Path) -> None:
    # The optimistic concurrency the sealer relies on: one LogEpochs id per log.
    data = tmp_path / "data"
    env = store_env(Settings(data_dir=data))
    a, b = RelayApp(env), RelayApp(env)
    a.save(LogEpochs(at=1))
    with pytest.raises(IntegrityError):
        b.save(LogEpochs(at=2))


def test_a_log_sealed_the_old_way_gains_epochs_from_position_1(tmp_path: Path) -> None:
    # A log written before epochs existed (rolling seals only) is cut into epochs
    # from position 1 once a relay with epochs runs on it, one epoch per commit,
    # and both kinds of seal verify.
    data = tmp_path / "data"
    clock = run_relay(data, [beats(200)], epoch_events=0, seal_every=25, archive=False)
    assert sealed_epochs(SqliteLog(data)) == []
    run_relay(data, [beats(120)], clock=clock, epoch_events=64, seal_every=25, archive=False)
    epochs = sealed_epochs(SqliteLog(data))
    assert [(e.first, e.last) for e in epochs[:3]] == [(1, 64), (65, 128), (129, 192)]
    for e in epochs:
        assert recomputed_root(data, e) == e.root
    from relay.audit.verify import verify

    with SqliteLog(data) as log:
        report = verify(log, data, gapless=True)
    assert report.ok, report.problems
    assert report.seals >= 8 and report.epochs is not None and report.epochs.checked == len(epochs)


def test_a_failing_epoch_seal_never_fails_a_write(tmp_path: Path) -> None:
    # Fault injection at the one seam: the sealer raises after the batch committed.
    # Every command still succeeds, and the epoch is sealed once sealing works again.
    from relay.service import RelayService
    from tests.loglasts.epochlog import Step, heartbeats

    def breaking(on: bool) -> Step:
        async def step(service: RelayService, clock: FakeClock) -> None:
            epochs = service.writer.epochs
            if on:
                epochs.seal = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk on fire"))
            else:
                del epochs.seal  # the class's own method again

        return step

    async def count(service: RelayService, clock: FakeClock) -> None:
        await heartbeats(service, clock, 150)  # raises if any command failed

    data = tmp_path / "data"
    run_relay(
        data,
        [breaking(True), count, breaking(False), beats(5)],
        epoch_events=100,
        seal_every=0,
        archive=False,
    )
    epochs = sealed_epochs(SqliteLog(data))
    assert epochs and (epochs[0].first, epochs[0].last) == (1, 100)
    assert recomputed_root(data, epochs[0]) == epochs[0].root
