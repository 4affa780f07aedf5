"""Crash safety: ``kill -9`` a real relay in each phase of archiving and thinning.

A relay is started with ``RELAY_TEST_PHASE=<phase>``: its archiver stops at
that phase (relay.store.archiver.pause_at writes ``phase-reached``), while
the relay keeps acknowledging writes. Then it is killed with SIGKILL and
started again without the hook. Afterwards nothing acknowledged is missing,
every archived or thinned epoch is whole (the reader equals the twin, less
thinned heartbeats, which the intervals account for), no staged file is
left behind, and ``relay audit verify --full`` passes.

One phase runs by default (the riskiest: deleting live rows); the rest,
thinning's included, are marked slow (``pytest -m slow``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.application import RelayApp
from relay.audit.log import AppLog
from relay.config import Settings
from relay.store import store_env
from relay.store.archiver import HEARTBEAT_TOPICS, THINNED_TOPICS
from tests.loglasts.archivelog import copy_data, fleet, open_reader, rows
from tests.loglasts.epochlog import run_relay
from tests.support.client import Client
from tests.support.server import RelayProcess

EPOCH = 100
ARGS = ["--epoch-events", str(EPOCH)]

QUICK = ["archive.delete"]
SLOW = ["archive.write", "archive.check", "archive.snapshot", "archive.record", "thin.write",
        "thin.check", "thin.publish", "thin.drop"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("crash") / "built"
    run_relay(data, [fleet(450)], epoch_events=EPOCH)
    return data


def wait_for(what: str, check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def archive_settled(data: Path, thinning: bool) -> bool:
    folder = data / "archive"
    if not folder.exists() or list(folder.glob(".*.new")):
        return False
    full, thin = list(folder.glob("epoch-*.full")), list(folder.glob("epoch-*.thin"))
    return (not full and len(thin) >= 4) if thinning else len(full) >= 4


def crash_in(phase: str, built: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    copy_data(built, data)
    thinning = phase.startswith("thin.")
    keep = {"RELAY_KEEP_HEARTBEATS": "0" if thinning else "forever"}
    relay = RelayProcess(data, ARGS, env={**keep, "RELAY_TEST_PHASE": phase}).start()
    acked = 0
    try:
        c = Client(relay.url)
        wait_for(f"the archiver to reach {phase}", (data / "phase-reached").exists)
        assert (data / "phase-reached").read_text().startswith(phase)
        for _ in range(30):  # writes acknowledged while the archiver is stopped mid-phase
            assert c.post("/api/agents/a2/heartbeat").status == 200
            acked += 1
        head = c.log_head()
        c.close()
    finally:
        relay.kill()
    (data / "phase-reached").unlink()
    again = RelayProcess(data, ARGS, env=keep).start()
    try:
        wait_for("the archive to be finished", lambda: archive_settled(data, thinning))
        c = Client(again.url)
        assert c.log_head() >= head
        c.close()
    finally:
        assert again.stop() == 0
    # Nothing acknowledged is lost; the archived log is whole.
    app, reader = open_reader(data)
    got = rows(reader)
    assert got[-1][0] >= head
    covered = reader.covered_upto()
    built_app = RelayApp(store_env(Settings(data_dir=built)))
    before = rows(AppLog(built_app))

    def thinned(r: tuple) -> bool:
        return thinning and r[0] <= covered and r[3] in THINNED_TOPICS

    assert [r for r in got if r[0] <= before[-1][0]] == [r for r in before if not thinned(r)]
    intervals = reader.intervals(0, 2**62)
    assert bool(intervals) == thinning
    beats = sum(iv.count for iv in intervals) + sum(1 for r in got if r[3] in HEARTBEAT_TOPICS)
    assert beats == sum(1 for r in before if r[3] in HEARTBEAT_TOPICS) + acked
    app.close()
    built_app.close()
    out = subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), "verify", "--full"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def built_head(built: Path) -> int:
    app = RelayApp(store_env(Settings(data_dir=built)))
    try:
        return AppLog(app).head()
    finally:
        app.close()


@pytest.mark.parametrize("phase", QUICK)
def test_kill_9_in_a_phase_loses_nothing(phase: str, built: Path, tmp_path: Path) -> None:
    crash_in(phase, built, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("phase", SLOW)
def test_kill_9_in_every_other_phase_loses_nothing(phase: str, built: Path, tmp_path: Path) -> None:
    crash_in(phase, built, tmp_path)
