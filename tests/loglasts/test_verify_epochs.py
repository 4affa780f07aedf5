"""``relay audit verify`` over epochs, on real SQLite files.

Incremental runs, checkpoints, and tampering named by epoch and position.
"""

from __future__ import annotations

import base64
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import chain, merkle
from relay.audit.cli import default_state_path
from relay.audit.epochs import EpochInfo, sealed_epochs
from relay.audit.log import SqliteLog
from relay.cli import main
from tests.loglasts.epochlog import beats, run_relay

DB = "relay.sqlite"
EPOCH = 64

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(data, *args)``: ``relay audit --data DATA ARGS`` in this process; (exit code, stdout)."""

    def _run(data: Path, *args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["audit", "--data", str(data), *args])
        return code, capsys.readouterr().out

    return _run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two stopped relays' data folders: epochs of 64 with rolling seals every 16, and without seals."""
    root = tmp_path_factory.mktemp("epochs")
    sealed, bare = root / "sealed", root / "bare"
    run_relay(sealed, [beats(300)], epoch_events=EPOCH, seal_every=16, archive=False)
    run_relay(bare, [beats(300)], epoch_events=EPOCH, seal_every=0, archive=False)
    return {"sealed": sealed, "bare": bare}


def copy(built: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    dest = tmp_path / kind
    shutil.copytree(built[kind], dest)
    return dest


def epochs_of(data: Path) -> list[EpochInfo]:
    log = SqliteLog(data)
    try:
        return sealed_epochs(log)
    finally:
        log.close()


def heartbeats_in(db: sqlite3.Connection, e: EpochInfo) -> list[int]:
    return [
        r[0]
        for r in db.execute(
            "SELECT rowid FROM stored_events WHERE topic = 'AgentHeartbeatReceived' "
            "AND rowid BETWEEN ? AND ? ORDER BY rowid",
            (e.first, e.last),
        )
    ]


def edit_at(db: sqlite3.Connection, position: int) -> None:
    """Change one heartbeat's time by 1 ms: still valid JSON, still folds; only the seals can tell."""
    (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = ?", (position,)).fetchone()
    d = orjson.loads(state)
    d["at"] += 1
    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(d), position))


def test_an_untouched_log_verifies_and_remembers_its_epochs(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "sealed", tmp_path)
    n = len(epochs_of(data))
    assert n >= 4
    code, out = run(data, "verify")
    assert code == 0, out
    assert f"epochs: {n} sealed; {n} recomputed from their events" in out
    state = orjson.loads(default_state_path(data).read_bytes())
    assert [k for k, _ in state["epochs"]] == list(range(1, n + 1))
    # The second run trusts what the first proved and reads only the open epoch.
    code, out = run(data, "verify")
    assert code == 0, out
    assert f"0 recomputed from their events, {n} proven by an earlier run" in out
    events_read = int(out.split("OK: ")[1].split(" ")[0])
    assert events_read < EPOCH + 40  # the open epoch and the stretch since the last seal, not the log
    # --full checks everything again.
    code, out = run(data, "verify", "--full")
    assert code == 0, out
    assert f"{n} recomputed from their events" in out and "equal the relay's checkpoint" in out


def test_incremental_runs_check_only_new_epochs(built: dict[str, Path], tmp_path: Path, run: Run) -> None:
    data = copy(built, "sealed", tmp_path)
    assert run(data, "verify")[0] == 0
    before = len(epochs_of(data))
    run_relay(data, [beats(200)], epoch_events=EPOCH, seal_every=16, archive=False)
    after = len(epochs_of(data))
    assert after > before
    code, out = run(data, "verify")
    assert code == 0, out
    assert f"{after - before} recomputed from their events, {before} proven by an earlier run" in out


def test_an_edited_event_is_named_by_epoch_and_position(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "sealed", tmp_path)
    e = epochs_of(data)[1]
    with sqlite3.connect(data / DB) as db:
        target = heartbeats_in(db, e)[5]
        edit_at(db, target)
    code, out = run(data, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {target} in epoch {e.epoch}: "), out
    assert f"epoch {e.epoch} (positions {e.first}-{e.last}" in out  # and its root no longer matches
    assert not default_state_path(data).exists()  # nothing proven, nothing remembered


def test_a_deleted_event_is_named_by_epoch_and_position(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "sealed", tmp_path)
    e = epochs_of(data)[2]
    with sqlite3.connect(data / DB) as db:
        target = heartbeats_in(db, e)[3]
        db.execute("DELETE FROM stored_events WHERE rowid = ?", (target,))
    code, out = run(data, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {target} in epoch {e.epoch}: "), out


def test_two_swapped_events_are_named_by_epoch_and_position(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "sealed", tmp_path)
    e = epochs_of(data)[1]
    with sqlite3.connect(data / DB) as db:
        beats_ = heartbeats_in(db, e)
        get = "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid = ?"
        first = beats_[2]
        a = db.execute(get, (first,)).fetchone()
        second = next(p for p in beats_ if p > first and db.execute(get, (p,)).fetchone()[0] != a[0])
        b = db.execute(get, (second,)).fetchone()
        db.execute("UPDATE stored_events SET originator_id = 'x' WHERE rowid = ?", (first,))
        for pos, (oid, version, topic, state) in ((second, a), (first, b)):
            db.execute(
                "UPDATE stored_events SET originator_id = ?, originator_version = ?, topic = ?, state = ? "
                "WHERE rowid = ?",
                (oid, version, topic, state, pos),
            )
    code, out = run(data, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {first} in epoch {e.epoch}: "), out


def test_without_rolling_seals_the_root_names_the_epoch(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "bare", tmp_path)
    e = epochs_of(data)[2]
    with sqlite3.connect(data / DB) as db:
        edit_at(db, heartbeats_in(db, e)[7])
    code, out = run(data, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {e.first} in epoch {e.epoch}: epoch {e.epoch} (positions "), out


def test_an_incremental_run_checks_the_open_epoch_and_full_finds_old_edits(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "sealed", tmp_path)
    assert run(data, "verify")[0] == 0
    es = epochs_of(data)
    with sqlite3.connect(data / DB) as db:
        old = heartbeats_in(db, es[0])[4]
        edit_at(db, old)
    # An epoch proven before is trusted by its root (docs/audit.md): --full is what re-reads it.
    assert run(data, "verify")[0] == 0
    code, out = run(data, "verify", "--full")
    assert code == 1 and out.startswith(f"FAIL at position {old} in epoch 1: "), out
    # An edit in the open epoch is caught by the incremental run (its rolling seal).
    data2 = copy(built, "sealed", tmp_path / "2")
    assert run(data2, "verify")[0] == 0
    with sqlite3.connect(data2 / DB) as db:
        tail = db.execute(
            "SELECT MIN(rowid) FROM stored_events WHERE topic = 'AgentHeartbeatReceived' AND rowid > ?",
            (es[-1].last,),
        ).fetchone()[0]
        assert tail is not None
        edit_at(db, tail)
    code, out = run(data2, "verify")
    assert code == 1 and out.startswith(f"FAIL at position {tail}"), out


def test_a_verified_epoch_whose_seal_was_rewritten_is_named(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "sealed", tmp_path)
    assert run(data, "verify")[0] == 0
    e = epochs_of(data)[1]
    with sqlite3.connect(data / DB) as db:
        (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = ?", (e.position,)).fetchone()
        d = orjson.loads(state)
        d["root"] = "0" * 64
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(d), e.position))
    code, out = run(data, "verify")
    assert code == 1, out
    assert "epoch 2's sealed root is 000" in out and "rewritten since" in out, out


def rewrite_history(data: Path, position: int) -> None:
    """What someone with write access and the relay's code can do: edit an event and reseal every epoch."""
    with sqlite3.connect(data / DB) as db:
        edit_at(db, position)
        previous = None
        for e in epochs_of(data):
            rows = db.execute(
                "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
                "WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
                (e.first, e.last),
            ).fetchall()
            root = merkle.root(
                [merkle.leaf_hash(chain.link(r[0], UUID(r[1]), r[2], r[3], bytes(r[4]))) for r in rows]
            ).hex()
            (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = ?", (e.position,)).fetchone()
            d = orjson.loads(state)
            d["root"], d["previous_root"] = root, previous
            db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(d), e.position))
            db.commit()
            previous = root


def test_a_checkpoint_held_elsewhere_catches_a_rewritten_history(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "bare", tmp_path)
    code, text = run(data, "checkpoint")
    assert code == 0
    origin, size, _, blank = text.split("\n")[:4]
    assert origin.startswith("relay-log/") and int(size) == len(epochs_of(data)) and blank == ""
    cp = tmp_path / "checkpoint.txt"
    cp.write_text(text)
    # The log grows: still an extension of the checkpoint.
    run_relay(data, [beats(150)], epoch_events=EPOCH, seal_every=0, archive=False)
    code, out = run(data, "verify", "--checkpoint", str(cp))
    assert code == 0, out
    assert "append-only extension of the checkpoint" in out
    # Someone rewrites an old event and reseals every epoch: the log agrees with itself...
    with sqlite3.connect(data / DB) as db:
        target = heartbeats_in(db, epochs_of(data)[0])[2]
    rewrite_history(data, target)
    code, out = run(data, "verify", "--full")
    assert code == 0, out
    # ... but not with the checkpoint a third party kept.
    code, out = run(data, "verify", "--full", "--checkpoint", str(cp))
    assert code == 1, out
    assert "not an append-only extension of the checkpoint" in out


def test_a_consistency_proof_a_third_party_can_check(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "bare", tmp_path)
    old_text = run(data, "checkpoint")[1]
    cp = tmp_path / "old.txt"
    cp.write_text(old_text)
    run_relay(data, [beats(150)], epoch_events=EPOCH, seal_every=0, archive=False)
    new_text = run(data, "checkpoint")[1]
    code, proof_text = run(data, "checkpoint", "--proof-from", str(cp))
    assert code == 0
    import base64

    _, m, old_root = old_text.split("\n")[:3]
    _, n, new_root = new_text.split("\n")[:3]
    assert int(n) > int(m)
    proof = [base64.b64decode(line) for line in proof_text.split()]
    assert merkle.verify_consistency(
        int(m), int(n), base64.b64decode(old_root), base64.b64decode(new_root), proof
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("relay-log/x\n3\n", "one per line"),
        ("relay-log/x\nthree\nAAAA\n\n", "decimal"),
        ("relay-log/x\n3\nnot base64!\n\n", "base64"),
        ("relay-log/x\n3\nAAAA\n\n", "32 bytes"),
        ("relay log\n3\n" + "A" * 43 + "=\n\n", "origin"),
    ],
)
def test_a_malformed_checkpoint_is_refused(
    built: dict[str, Path], tmp_path: Path, run: Run, text: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cp = tmp_path / "cp.txt"
    cp.write_text(text)
    code = main(["audit", "--data", str(built["bare"]), "verify", "--checkpoint", str(cp)])
    assert code == 2
    assert why in capsys.readouterr().err


def test_a_checkpoint_from_another_log_or_too_new_is_refused(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    data = copy(built, "bare", tmp_path)
    origin, size, root = run(data, "checkpoint")[1].split("\n")[:3]
    cp = tmp_path / "cp.txt"
    cp.write_text(f"{origin}\n{int(size) + 5}\n{root}\n\n")
    code, out = run(data, "verify", "--checkpoint", str(cp))
    assert code == 1 and "epochs were removed" in out, out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_edited_anywhere_is_caught_and_an_event_edit_is_named(
    built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, run: Run, data: st.DataObject
) -> None:
    dest = tmp_path_factory.mktemp("edit") / "d"
    shutil.copytree(built["sealed"], dest)
    with sqlite3.connect(dest / DB) as db:
        head = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
        last_sealed = max(
            orjson.loads(s)["upto"]
            for (s,) in db.execute("SELECT state FROM stored_events WHERE topic = 'LogSealed'")
        )
        position = data.draw(st.integers(1, last_sealed), label="position")
        topic, state = db.execute(
            "SELECT topic, state FROM stored_events WHERE rowid = ?", (position,)
        ).fetchone()
        state = bytearray(state)
        i = data.draw(st.integers(0, len(state) - 1), label="byte")
        state[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (bytes(state), position))
    assert position <= head
    code, out = run(dest, "verify")
    assert code == 1, out
    named = int(out.split("FAIL at position ")[1].split(" ")[0].rstrip(":"))
    if topic not in ("LogSealed", "EpochSealed"):
        # An event's own bytes: named exactly, with its epoch when it is in one.
        assert named == position, out
        e = next((e for e in epochs_of(dest) if e.first <= position <= e.last), None)
        if e is not None:
            assert out.startswith(f"FAIL at position {position} in epoch {e.epoch}: "), out
    else:
        # A seal's bytes: the seal itself, or an event it claims to cover, is named.
        assert named <= position, out


def test_an_edit_in_a_new_epoch_is_named_by_an_incremental_run(
    built: dict[str, Path], tmp_path: Path, run: Run
) -> None:
    # The new epochs are read fast (roots only); a mismatch sends verify back
    # over the whole log the careful way, which names the position.
    data = copy(built, "sealed", tmp_path)
    assert run(data, "verify")[0] == 0
    before = len(epochs_of(data))
    run_relay(data, [beats(200)], epoch_events=EPOCH, seal_every=16, archive=False)
    e = epochs_of(data)[before]  # a new epoch
    with sqlite3.connect(data / DB) as db:
        target = heartbeats_in(db, e)[3]
        edit_at(db, target)
    state_before = default_state_path(data).read_bytes()
    code, out = run(data, "verify")
    assert code == 1, out
    assert out.startswith(f"FAIL at position {target} in epoch {e.epoch}: "), out
    assert default_state_path(data).read_bytes() == state_before


def test_the_fast_open_epoch_pass_reports_what_the_careful_one_does(
    built: dict[str, Path], tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental run checks the open epoch's chain and seals in a fast pass
    (verify._fast_open); it must print and remember exactly what the careful pass
    would, and defer to it at any doubt (a digest of a seal changed: named)."""
    from relay.audit import verify as v

    data = copy(built, "sealed", tmp_path)
    assert run(data, "verify")[0] == 0
    run_relay(data, [beats(200)], epoch_events=EPOCH, seal_every=16, archive=False)
    twin = tmp_path / "twin"
    shutil.copytree(data, twin)
    default_state_path(twin).parent.mkdir(parents=True, exist_ok=True)
    default_state_path(twin).write_bytes(default_state_path(data).read_bytes())
    taken: list[object] = []
    real = v._fast_open
    monkeypatch.setattr(v, "_fast_open", lambda *a: taken.append(real(*a)) or taken[-1])
    fast = run(data, "verify")
    assert taken and taken[-1] is not None  # the fast pass answered
    monkeypatch.setattr(v, "_fast_open", lambda *a: None)
    careful = run(twin, "verify")
    assert fast[0] == 0 and "proven by an earlier run" in fast[1], fast
    assert fast == careful
    assert default_state_path(data).read_bytes() == default_state_path(twin).read_bytes()
    # A seal in the open epoch whose digests were rewritten (hash left alone): the
    # fast pass gives up, the careful one names the position.
    monkeypatch.setattr(v, "_fast_open", real)
    run_relay(data, [beats(40)], epoch_events=EPOCH, seal_every=16, archive=False)
    open_from = epochs_of(data)[-1].last
    with sqlite3.connect(data / DB) as db:
        rowid, state = db.execute(
            "SELECT rowid, state FROM stored_events WHERE topic = 'LogSealed' AND rowid > ? "
            "ORDER BY rowid DESC LIMIT 1",
            (open_from,),
        ).fetchone()
        seal = orjson.loads(state)
        raw = bytearray(chain.unpack_digests(seal["digests"])[0])
        raw[0] ^= 1
        packed = b"".join([bytes(raw), *chain.unpack_digests(seal["digests"])[1:]])
        seal["digests"] = base64.b64encode(packed).decode()
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(seal), rowid))
    code, out = run(data, "verify")
    assert code == 1, out
    assert out.startswith("FAIL at position "), out
