"""Archive segments: closed epochs leave the live store only once their segment proves its root.

Real SQLite files, a real relay service (writer thread, epochs sealed by the
writer), and a twin: a copy of the data folder taken before archiving, which
keeps every event live. Everything read through the archive must equal the
twin, byte for byte.
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from relay.application import RelayApp
from relay.audit.epochs import sealed_epochs
from relay.audit.log import AppLog
from relay.config import Settings
from relay.projections.follower import load_read_models
from relay.store import SQLITE_FILE, store_env
from relay.store.archive import ArchiveError, open_archive
from relay.store.archiver import Archiver
from relay.store.reader import LogReader
from tests.loglasts.archivelog import archive_now, copy_data, fleet, open_reader, rows
from tests.loglasts.epochlog import run_relay

EPOCH = 300


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, Path, object]:
    """(archived data folder, unarchived twin, clock): 1,500 events in epochs of 300."""
    data = tmp_path / "data"
    clock = run_relay(data, [fleet(1_500)], epoch_events=EPOCH, archive=False)
    twin = tmp_path / "twin"
    copy_data(data, twin)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="forever")
    return data, twin, clock


def live_positions(data: Path) -> list[int]:
    with sqlite3.connect(data / SQLITE_FILE) as db:
        return [r[0] for r in db.execute("SELECT rowid FROM stored_events ORDER BY rowid")]


def test_closed_epochs_leave_the_live_store_and_read_through_equals_the_twin(logs) -> None:
    data, twin, _ = logs
    app, reader = open_reader(data)
    twin_app = RelayApp(store_env(Settings(data_dir=twin)))
    epochs = sealed_epochs(reader)
    assert len(epochs) >= 5
    archived = reader.archive.entries()
    assert [e.epoch for e in archived] == [e.epoch for e in epochs]
    # The live store holds only the open epoch: nothing at or before the last archived position.
    live = live_positions(data)
    assert live and live[0] == archived[-1].last + 1
    # Every event, through the archive, equals the twin's (which never archived).
    assert rows(reader) == rows(AppLog(twin_app))
    assert reader.first() == 1 and reader.head() == AppLog(twin_app).head()
    # Pages that start inside a segment, at its end, and at the seam.
    for after in (0, 1, EPOCH - 1, EPOCH, archived[-1].last - 1, archived[-1].last):
        assert rows(reader, after, 50)[:120] == rows(AppLog(twin_app), after, 50)[:120]
    app.close()
    twin_app.close()


def test_segments_are_private_files_and_positions_are_never_reused(logs) -> None:
    data, twin, clock = logs
    folder = data / "archive"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    segments = sorted(folder.glob("epoch-*.full"))
    assert segments
    for p in segments:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert not list(folder.glob(".*.new"))
    # A write after archiving takes the next position, exactly as on the twin.
    head_before = live_positions(data)[-1]
    run_relay(data, [fleet(20)], clock=clock, epoch_events=EPOCH, keep_heartbeats="forever")
    run_relay(twin, [fleet(20)], clock=clock, epoch_events=EPOCH, archive=False)
    after = live_positions(data)
    assert after[-1] > head_before
    _, reader = open_reader(data)
    twin_app = RelayApp(store_env(Settings(data_dir=twin)))
    assert [r[0] for r in rows(reader)] == [r[0] for r in rows(AppLog(twin_app))]
    twin_app.close()


def test_aggregates_load_from_snapshots_after_their_events_are_archived(logs) -> None:
    data, twin, _ = logs
    app, reader = open_reader(data)
    twin_app = RelayApp(store_env(Settings(data_dir=twin)))
    ids = {r[1] for r in rows(AppLog(twin_app))}
    for oid in ids:
        mine, theirs = app.repository.get(oid), twin_app.repository.get(oid)
        assert mine.version == theirs.version
        assert {k: v for k, v in mine.__dict__.items() if k != "_modified_on"} == {
            k: v for k, v in theirs.__dict__.items() if k != "_modified_on"
        }
    # The read models rebuilt from position 0 through the archive equal the twin's.
    rm, _ = load_read_models(app, None, reader)
    twin_rm, _ = load_read_models(twin_app, None)
    assert rm.to_state() == twin_rm.to_state()
    app.close()
    twin_app.close()


def test_a_changed_live_row_is_never_archived_or_deleted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_relay(data, [fleet(700)], epoch_events=EPOCH, archive=False)
    with sqlite3.connect(data / SQLITE_FILE) as db:
        db.execute("UPDATE stored_events SET state = CAST('{\"at\":1}' AS BLOB) WHERE rowid = 10")
    app = RelayApp(store_env(Settings(data_dir=data)))
    archive = open_archive(app, data)
    reader = LogReader(AppLog(app), archive)
    epochs = sealed_epochs(app.recorder)
    archiver = Archiver(app, archive)
    with pytest.raises(ArchiveError, match="epoch 1: the live rows"):
        archiver.run(epochs)
    assert live_positions(data)[0] == 1
    assert not archive.refresh()
    assert not list((data / "archive").glob("epoch-*"))
    assert reader.select(0, 1)[0].id == 1
    app.close()
