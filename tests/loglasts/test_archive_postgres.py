"""Archiving on PostgreSQL: segments in a table beside the log, one node archives each epoch.

Real PostgreSQL (``RELAY_TEST_POSTGRES_DSN``), a fresh schema per test. Two
"nodes" (two applications on the same log, each with its own archiver)
archive at the same time; each epoch must be archived exactly once, and
everything read through either node's archive must equal the log as it was
before archiving.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from relay.application import RelayApp
from relay.audit.epochs import sealed_epochs
from relay.audit.log import AppLog
from relay.config import Settings
from relay.store import store_env
from relay.store.archive import open_archive
from relay.store.archiver import Archiver, ArchiveWorker
from relay.store.reader import LogReader
from tests.loglasts.archivelog import fleet, rows
from tests.loglasts.epochlog import run_relay
from tests.support.postgres import drop_schema, new_schema, require_dsn

pytestmark = pytest.mark.postgres
EPOCH = 150


@pytest.fixture
def dsn() -> object:
    schema, dsn = new_schema(require_dsn())
    yield dsn
    drop_schema(schema)


def test_two_nodes_archive_each_epoch_once_and_read_the_same_log(dsn: str, tmp_path: Path) -> None:
    settings = {"store": "postgres", "postgres_dsn": dsn}
    clock = run_relay(tmp_path / "d", [fleet(900)], epoch_events=EPOCH, **settings)
    apps = [RelayApp(store_env(Settings(data_dir=tmp_path / f"n{i}", **settings))) for i in range(2)]
    before = rows(AppLog(apps[0]))
    epochs = sealed_epochs(apps[0].recorder)
    assert len(epochs) >= 5
    workers = []
    for app in apps:
        archiver = Archiver(app, open_archive(app, None))
        workers.append(ArchiveWorker(archiver, lambda app=app: sealed_epochs(app.recorder), clock.now_ms))
    go = threading.Barrier(2)

    def run(w: ArchiveWorker) -> None:
        go.wait()
        w.run_now()

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # A node that found the other archiving skipped its run; a later run finds nothing to do.
    for w in workers:
        w.run_now()
    assert sum(w.archiver.archived for w in workers) == len(epochs)
    for app in apps:
        reader = LogReader(AppLog(app), open_archive(app, None))
        assert [e.epoch for e in reader.archive.entries()] == [e.epoch for e in epochs]
        assert rows(reader) == before
        first_live = app.recorder.select_notifications(start=0, limit=1)[0].id
        assert first_live == epochs[-1].last + 1
    # Positions go on after the deleted ranges, never back.
    run_relay(tmp_path / "d", [fleet(10)], clock=clock, epoch_events=10_000, **settings)
    after = rows(LogReader(AppLog(apps[0]), open_archive(apps[0], None)))
    assert after[: len(before)] == before and after[-1][0] > before[-1][0]
    for app in apps:
        app.close()


def test_migrating_an_archived_sqlite_log_copies_the_archived_epochs_too(dsn: str, tmp_path: Path) -> None:
    from relay.migrate import migrate
    from tests.loglasts.archivelog import archive_now, copy_data, open_reader

    data, twin = tmp_path / "data", tmp_path / "twin"
    clock = run_relay(data, [fleet(700)], epoch_events=EPOCH, archive=False)
    copy_data(data, twin)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="forever")
    _, reader = open_reader(data)
    assert reader.covered_upto() > 3 * EPOCH
    result = migrate(f"sqlite:{data}", f"postgres:{dsn}")
    twin_app = RelayApp(store_env(Settings(data_dir=twin)))
    target = RelayApp(store_env(Settings(store="postgres", postgres_dsn=dsn)))
    assert rows(AppLog(target)) == rows(AppLog(twin_app))
    assert result["total"] == len(rows(AppLog(twin_app)))
    target.close()
    twin_app.close()
