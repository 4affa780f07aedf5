"""`relay audit export` from the stored bytes says byte for byte what the domain path says.

Export builds each line from an event's stored state without making a domain
event (issue 14: >= 100,000 events/s over an archive). These compare it with
the domain path (``export_lines(..., fast=False)``: decode every event
through the mapper, as export did before) on the logs recorded by earlier
versions (their older ``class_version``s must be upcast, so they take the
domain path inside the fast one), on an archived and thinned log, and on a
stored body nested past the limit (which the transcoder shows clipped).
Whole exports and partial ones (``--after``), whose entity naming looks the
creation up.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest
from eventsourcing.utils import resolve_topic

from relay.audit.cli import export_lines, open_log
from relay.nesting import STORED_MAX_DEPTH
from relay.store import SQLITE_FILE
from tests.loglasts.archivelog import archive_now, fleet
from tests.loglasts.epochlog import beats, run_relay

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDED = sorted(p for p in FIXTURES.glob("log-v*") if (p / SQLITE_FILE).exists())
EPOCH = 200


def both(data: Path, after: int = 0) -> tuple[bytes, bytes]:
    """(fast export, domain-path export) of the log in ``data``, as ``relay audit export`` opens it."""
    log, _ = open_log(argparse.Namespace(data=data, store="sqlite", postgres_dsn=None))
    out: list[bytes] = []
    for fast in (True, False):
        buf = io.BytesIO()
        export_lines(log, buf, after, fast=fast)
        out.append(buf.getvalue())
    log.live.close()
    return out[0], out[1]


def assert_same(data: Path) -> list[int]:
    """Whole and partial exports agree; returns the positions the whole one shows."""
    fast, slow = both(data)
    assert fast == slow
    lines = fast.splitlines()
    assert len(lines) > 10
    positions = [orjson.loads(line)["position"] for line in lines]
    for after in (1, positions[len(positions) // 3], positions[-2]):
        part_fast, part_slow = both(data, after)
        assert part_fast == part_slow, after
        # A partial export is the tail of the whole one (the entities named the same).
        assert part_fast.splitlines() == [ln for ln, p in zip(lines, positions, strict=True) if p > after]
    return positions


def stored_older_versions(data: Path) -> int:
    """How many stored events carry a class_version older than their class's (upcast on read)."""
    conn = sqlite3.connect(data / SQLITE_FILE)
    try:
        older = 0
        for topic, state in conn.execute("SELECT topic, state FROM stored_events"):
            stored = orjson.loads(state).get("class_version", 1)
            older += stored < getattr(resolve_topic(topic), "class_version", 1)
        return older
    finally:
        conn.close()


@pytest.mark.parametrize("recorded", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_logs_export_the_same(recorded: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(recorded, data)
    assert_same(data)


def test_the_recorded_logs_hold_events_to_upcast() -> None:
    """Else the test above would not show that the fast path hands those to the domain."""
    assert RECORDED
    assert sum(stored_older_versions(p) for p in RECORDED) > 0


@pytest.fixture(scope="module")
def thinned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("export-thin") / "data"
    clock = run_relay(data, [fleet(900), beats(200)], epoch_events=EPOCH, archive=False)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="0")
    assert list((data / "archive").glob("epoch-*.thin")), "nothing was thinned"
    return data


def test_an_archived_thinned_log_exports_the_same(thinned: Path) -> None:
    positions = assert_same(thinned)
    # Archived epochs with thinned heartbeats (holes), then the live one.
    assert positions[-1] > 4 * EPOCH
    assert len(positions) < positions[-1] - positions[0]


def test_a_body_nested_past_the_limit_is_shown_clipped_either_way(tmp_path: Path) -> None:
    """Written before the limit (ADR 0011): the transcoder clips it, so must export."""
    data = tmp_path / "data"
    shutil.copytree(RECORDED[-1], data)
    conn = sqlite3.connect(data / SQLITE_FILE)
    try:
        oid, _, topic, state = conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events "
            "WHERE topic LIKE '%Heartbeat%' ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        last = conn.execute(
            "SELECT MAX(originator_version) FROM stored_events WHERE originator_id = ?", (oid,)
        ).fetchone()[0]
        deep: object = 1
        for _ in range(STORED_MAX_DEPTH + 5):
            deep = [deep]
        body = orjson.loads(state) | {"deep": deep}
        conn.execute(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
            (oid, last + 1, topic, orjson.dumps(body)),
        )
        conn.commit()
    finally:
        conn.close()
    fast, slow = both(data)
    assert fast == slow
    shown = orjson.loads(fast.splitlines()[-1])["data"]["deep"]
    assert shown != deep  # clipped: the raw body would have been shown whole
