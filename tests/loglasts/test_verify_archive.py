"""``relay audit verify`` through the archive: full and thinned segments, checkpoints across both.

Real SQLite files and real segment files (relay.store.archive), written by the
real relay service and archiver. Tampering inside a segment is made the way
someone with the relay's code would: decode the segment, change an event,
encode it again (so it still reads), and put it back.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import Notification

from relay.audit.cli import open_log
from relay.audit.epochs import EpochInfo, sealed_epochs
from relay.cli import main
from relay.store import segment
from tests.loglasts.archivelog import archive_now, fleet
from tests.loglasts.epochlog import run_relay

EPOCH = 120


def reader(data: Path):
    return open_log(argparse.Namespace(data=data, store=None, postgres_dsn=None))[0]


def audit(data: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "--data", str(data), *args])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An archived log (whole heartbeats) and a thinned one."""
    base = tmp_path_factory.mktemp("varch")
    out: dict[str, Path] = {}
    for kind, keep in (("archived", "forever"), ("thinned", "0")):
        data = base / kind
        clock = run_relay(data, [fleet(700)], epoch_events=EPOCH, seal_every=25, archive=False)
        archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats=keep, seal_every=25)
        out[kind] = data
    return out


def copy(logs: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    dest = tmp_path / kind
    shutil.copytree(logs[kind], dest)
    return dest


def rewrite_segment(data: Path, e: EpochInfo, change: Callable[[list[Notification], Any], int]) -> int:
    """Re-encode epoch ``e``'s segment with ``change(events, seg)`` applied; returns the changed position."""
    path = next((data / "archive").glob(f"epoch-{e.epoch:08d}.*"))
    seg = segment.decode(path.read_bytes())
    events = list(seg.events)
    position = change(events, seg)
    path.write_bytes(
        segment.encode(
            epoch=seg.epoch,
            first=seg.first,
            last=seg.last,
            size=seg.size,
            root=seg.root,
            events=events,
            at=segment.SegmentReader(path.read_bytes()).at,
            kind=seg.kind,
            leaf_index=seg.leaf_index,
            intervals=seg.intervals,
            cover=seg.cover,
        )
    )
    return position


def bump_a_heartbeat(events: list[Notification], seg: object) -> int:
    i = next(i for i, n in enumerate(events) if n.topic.endswith("HeartbeatReceived") and i > 3)
    n = events[i]
    state = orjson.loads(n.state)
    state["at"] += 1
    events[i] = Notification(
        id=n.id,
        originator_id=n.originator_id,
        originator_version=n.originator_version,
        topic=n.topic,
        state=orjson.dumps(state),
    )
    return n.id


@pytest.mark.parametrize("kind", ["archived", "thinned"])
def test_an_archived_log_verifies_and_stays_an_extension_of_its_checkpoint(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    data = copy(logs, kind, tmp_path)
    assert list((data / "archive").glob("epoch-*")), "nothing was archived"
    n = len(sealed_epochs(reader(data)))
    code, out = audit(data, capsys, "verify", "--full")
    assert code == 0, out
    if kind == "thinned":
        assert " from their kept events and subtree hashes" in out, out
    else:
        assert f"{n} recomputed from their events" in out, out
    code, out = audit(data, capsys, "verify")
    assert code == 0 and f"{n} proven by an earlier run" in out, out


def test_a_checkpoint_taken_before_archiving_and_thinning_still_proves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A checkpoint held by a third party before the log was archived and thinned:
    # taken from a copy made before archiving (the epochs it covers have not changed).
    before = tmp_path / "before"
    clock = run_relay(before, [fleet(700)], epoch_events=EPOCH, seal_every=25, archive=False)
    code, text = audit(before, capsys, "checkpoint")
    assert code == 0
    cp = tmp_path / "cp.txt"
    cp.write_text(text)
    archive_now(before, clock, epoch_events=EPOCH, keep_heartbeats="0", seal_every=25)
    run_relay(before, [fleet(300)], clock=clock, epoch_events=EPOCH, seal_every=25, keep_heartbeats="0")
    code, out = audit(before, capsys, "verify", "--checkpoint", str(cp))
    assert code == 0, out
    assert "append-only extension of the checkpoint" in out


def test_an_event_edited_in_a_full_segment_is_named_by_epoch_and_position(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy(logs, "archived", tmp_path)
    e = sealed_epochs(reader(data))[1]
    position = rewrite_segment(data, e, bump_a_heartbeat)
    code, out = audit(data, capsys, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {position} in epoch {e.epoch}: "), out


def test_an_event_edited_in_a_thinned_segment_is_named_by_epoch(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy(logs, "thinned", tmp_path)
    e = sealed_epochs(reader(data))[1]

    def edit_kept(events: list[Notification], seg: object) -> int:
        i = next(i for i, n in enumerate(events) if n.topic == "AgentRegistered" or i == len(events) - 1)
        n = events[i]
        events[i] = Notification(
            id=n.id,
            originator_id=n.originator_id,
            originator_version=n.originator_version,
            topic=n.topic,
            state=n.state.replace(b"a", b"b", 1) if b"a" in n.state else n.state + b" ",
        )
        return n.id

    rewrite_segment(data, e, edit_kept)
    code, out = audit(data, capsys, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {e.first} in epoch {e.epoch}: "), out
    assert "thinned" in out.splitlines()[0]


def test_a_subtree_hash_edited_in_a_thinned_segment_is_named_by_epoch(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy(logs, "thinned", tmp_path)
    e = sealed_epochs(reader(data))[2]
    path = next((data / "archive").glob(f"epoch-{e.epoch:08d}.thin"))
    seg = segment.decode(path.read_bytes())
    assert seg.cover
    s, t, h = seg.cover[0]
    cover = [(s, t, bytes([h[0] ^ 1]) + h[1:]), *seg.cover[1:]]
    path.write_bytes(
        segment.encode(
            epoch=seg.epoch,
            first=seg.first,
            last=seg.last,
            size=seg.size,
            root=seg.root,
            events=seg.events,
            at=segment.SegmentReader(path.read_bytes()).at,
            kind="thin",
            leaf_index=seg.leaf_index,
            intervals=seg.intervals,
            cover=cover,
        )
    )
    code, out = audit(data, capsys, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {e.first} in epoch {e.epoch}: "), out


def test_a_corrupt_or_missing_segment_is_named_by_epoch(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy(logs, "archived", tmp_path)
    es = sealed_epochs(reader(data))
    path = next((data / "archive").glob(f"epoch-{es[1].epoch:08d}.*"))
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    code, out = audit(data, capsys, "verify")
    assert code == 1, out
    assert " in epoch 2: " in out.splitlines()[0], out
    # A segment deleted outright: its positions are missing.
    data2 = copy(logs, "archived", tmp_path / "2")
    next((data2 / "archive").glob(f"epoch-{es[2].epoch:08d}.*")).unlink()
    code, out = audit(data2, capsys, "verify")
    assert code == 1, out
    assert out.startswith("FAIL at position "), out


def test_presence_intervals_that_do_not_account_for_the_dropped_leaves_are_named(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy(logs, "thinned", tmp_path)
    e = sealed_epochs(reader(data))[1]
    path = next((data / "archive").glob(f"epoch-{e.epoch:08d}.thin"))
    seg = segment.decode(path.read_bytes())
    assert seg.intervals
    first = seg.intervals[0]
    intervals = [segment.Interval.from_json([*first.to_json()[:6], first.count + 1, *first.to_json()[7:]])]
    path.write_bytes(
        segment.encode(
            epoch=seg.epoch,
            first=seg.first,
            last=seg.last,
            size=seg.size,
            root=seg.root,
            events=seg.events,
            at=segment.SegmentReader(path.read_bytes()).at,
            kind="thin",
            leaf_index=seg.leaf_index,
            intervals=intervals + seg.intervals[1:],
            cover=seg.cover,
        )
    )
    code, out = audit(data, capsys, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {e.first} in epoch {e.epoch}: "), out
    assert "presence intervals count" in out


def test_an_incremental_run_after_the_proven_epochs_were_thinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # verify proves the epochs while they are live; then they are archived and
    # thinned; the next (incremental) run picks up where the last one stopped.
    data = tmp_path / "data"
    clock = run_relay(data, [fleet(700)], epoch_events=EPOCH, seal_every=25, archive=False)
    code, out = audit(data, capsys, "verify")
    assert code == 0, out
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="0", seal_every=25)
    run_relay(data, [fleet(300)], clock=clock, epoch_events=EPOCH, seal_every=25)
    assert list((data / "archive").glob("epoch-*.thin"))
    code, out = audit(data, capsys, "verify")
    assert code == 0, out
    assert "proven by an earlier run" in out
    code, out = audit(data, capsys, "verify", "--full")
    assert code == 0, out


def test_expect_is_checked_or_refused_never_silently_skipped(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = copy(logs, "archived", tmp_path)
    code, out = audit(whole, capsys, "verify", "--full")
    assert code == 0, out
    chain_value = out.split("(chain ")[1].split(")")[0]
    upto = int(out.split("covering up to position ")[1].split(" ")[0])
    assert audit(whole, capsys, "verify", "--expect", f"{upto}:{chain_value}")[0] == 0
    code, out = audit(whole, capsys, "verify", "--expect", f"{upto}:{'0' * 64}")
    assert code == 1 and "not the expected" in out, out
    # On a thinned log the chain before the thinned epochs cannot be recomputed: say so.
    thin = copy(logs, "thinned", tmp_path)
    code, out = audit(thin, capsys, "verify", "--expect", f"5:{'0' * 64}")
    assert code == 1 and ("cannot be recomputed" in out or "cannot be checked" in out), out


def test_a_thinned_epoch_drops_its_rolling_seals_into_one_interval(logs: dict[str, Path]) -> None:
    """ADR 0039: with seals on (every 25 events here), a thinned segment keeps no
    LogSealed event; one interval per epoch stands for them, and verify --full
    (test above) still proves the root from kept events and cover. Keeping the
    seals whole (the old thinning) fails the first assertion."""
    data = logs["thinned"]
    paths = sorted((data / "archive").glob("epoch-*.thin"))
    assert paths
    for path in paths:
        seg = segment.decode(path.read_bytes())
        assert not [n for n in seg.events if n.topic == "LogSealed"]
        seals = [iv for iv in seg.intervals if iv.topic == "LogSealed"]
        assert len(seals) == 1 and seals[0].count >= 1
        assert seg.size - len(seg.events) == sum(iv.count for iv in seg.intervals)
    r = reader(data)
    everything = r.intervals(0, 2**62, seals=True)
    assert {iv.topic for iv in r.intervals(0, 2**62)} <= {
        "AgentHeartbeatReceived", "OrchestratorHeartbeatReceived"
    }  # readers of presence (GET /api/log, folds) never see the seals' runs
    assert any(iv.topic == "LogSealed" for iv in everything)


def test_a_seal_interval_removed_from_a_thinned_segment_is_named(
    logs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy(logs, "thinned", tmp_path)
    e = sealed_epochs(reader(data))[1]
    path = next((data / "archive").glob(f"epoch-{e.epoch:08d}.thin"))
    seg = segment.decode(path.read_bytes())
    path.write_bytes(
        segment.encode(
            epoch=seg.epoch,
            first=seg.first,
            last=seg.last,
            size=seg.size,
            root=seg.root,
            events=seg.events,
            at=segment.SegmentReader(path.read_bytes()).at,
            kind="thin",
            leaf_index=seg.leaf_index,
            intervals=[iv for iv in seg.intervals if iv.topic != "LogSealed"],
            cover=seg.cover,
        )
    )
    code, out = audit(data, capsys, "verify", "--full")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {e.first} in epoch {e.epoch}: "), out
    assert "intervals count" in out
