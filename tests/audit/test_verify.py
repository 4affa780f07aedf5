"""``relay audit verify``: an untouched log passes; edited, deleted or swapped events are named."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import orjson
import pytest

from tests.audit.conftest import SEAL_EVERY, Audit, busy_day
from tests.support.client import Client
from tests.support.server import RelayProcess

DB = "relay.sqlite"


def copy_of(sealed_log: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(sealed_log, dest)
    return dest


def row(db: sqlite3.Connection, position: int) -> tuple[str, int, str, bytes]:
    found = db.execute(
        "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid = ?",
        (position,),
    ).fetchone()
    assert found is not None, position
    return found[0], found[1], found[2], bytes(found[3])


def heartbeat_positions(db: sqlite3.Connection) -> list[int]:
    rows = db.execute(
        "SELECT rowid FROM stored_events WHERE topic LIKE '%HeartbeatReceived' ORDER BY rowid"
    ).fetchall()
    return [r[0] for r in rows]


def last_sealed(db: sqlite3.Connection) -> int:
    rows = db.execute(
        "SELECT state FROM stored_events WHERE topic = 'LogSealed' ORDER BY rowid"
    ).fetchall()
    return max(orjson.loads(r[0])["upto"] for r in rows)


def test_an_untouched_log_verifies(sealed_log: Path, audit: Audit) -> None:
    r = audit(sealed_log, "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: ")
    assert "seals verified" in r.stdout
    assert "equal the relay's checkpoint" in r.stdout


def test_an_edited_event_is_named(sealed_log: Path, tmp_path: Path, audit: Audit) -> None:
    data = copy_of(sealed_log, tmp_path)
    with sqlite3.connect(data / DB) as db:
        target = heartbeat_positions(db)[3]
        assert target < last_sealed(db)
        _, _, _, state = row(db, target)
        decoded = orjson.loads(state)
        decoded["at"] += 1  # still valid JSON, still folds: only the seals can tell
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(decoded), target))
    r = audit(data, "verify")
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith(f"FAIL at position {target}: "), r.stdout


def test_a_deleted_event_is_named(sealed_log: Path, tmp_path: Path, audit: Audit) -> None:
    data = copy_of(sealed_log, tmp_path)
    with sqlite3.connect(data / DB) as db:
        target = heartbeat_positions(db)[5]
        assert target < last_sealed(db)
        db.execute("DELETE FROM stored_events WHERE rowid = ?", (target,))
    r = audit(data, "verify")
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith(f"FAIL at position {target}: "), r.stdout
    assert "missing" in r.stdout.splitlines()[0]


@pytest.mark.parametrize("same_aggregate", [False, True])
def test_two_swapped_events_are_named(
    sealed_log: Path, tmp_path: Path, audit: Audit, same_aggregate: bool
) -> None:
    data = copy_of(sealed_log, tmp_path)
    with sqlite3.connect(data / DB) as db:
        beats = heartbeat_positions(db)
        first = beats[1]
        a = row(db, first)
        # Another heartbeat: of a different aggregate (only the chain can tell), or of the same.
        second = next(p for p in beats if p > first and (row(db, p)[0] == a[0]) == same_aggregate)
        assert second < last_sealed(db)
        b = row(db, second)
        # Move the rows' contents, keeping their positions (the primary key forbids a direct swap).
        db.execute("UPDATE stored_events SET originator_id = 'x' WHERE rowid = ?", (first,))
        for pos, (oid, version, topic, state) in ((second, a), (first, b)):
            db.execute(
                "UPDATE stored_events SET originator_id = ?, originator_version = ?, topic = ?, "
                "state = ? WHERE rowid = ?",
                (oid, version, topic, state, pos),
            )
    r = audit(data, "verify")
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith(f"FAIL at position {first}: "), r.stdout


def test_a_forged_seal_is_caught_by_the_next_seal(sealed_log: Path, tmp_path: Path, audit: Audit) -> None:
    # Rewriting an event *and* the seal after it is not enough: that seal's bytes
    # are in the chain that the following seal covers.
    data = copy_of(sealed_log, tmp_path)
    with sqlite3.connect(data / DB) as db:
        seals = db.execute(
            "SELECT rowid, state FROM stored_events WHERE topic = 'LogSealed' ORDER BY rowid"
        ).fetchall()
        seal_pos, seal_state = seals[0][0], orjson.loads(seals[0][1])
        seal_state["hash"] = "0" * 64
        db.execute(
            "UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(seal_state), seal_pos)
        )
    r = audit(data, "verify")
    assert r.returncode == 1
    assert r.stdout.startswith(f"FAIL at position {seal_state['upto']}: ") or r.stdout.startswith(
        f"FAIL at position {seal_pos}: "
    ), r.stdout


def test_a_log_shorter_than_its_checkpoint_is_caught(
    sealed_log: Path, tmp_path: Path, audit: Audit
) -> None:
    data = copy_of(sealed_log, tmp_path)
    with sqlite3.connect(data / DB) as db:
        head = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
        db.execute("DELETE FROM stored_events WHERE rowid = ?", (head,))
    r = audit(data, "verify")
    assert r.returncode == 1
    assert "removed from the end" in r.stdout, r.stdout


def test_verify_reads_a_running_relay_without_disturbing_it(tmp_path: Path, audit: Audit) -> None:
    with RelayProcess(tmp_path / "data", ["--seal-every", str(SEAL_EVERY)]) as relay:
        c = Client(relay.url)
        busy_day(c)
        stop = threading.Event()

        def keep_writing() -> None:
            w = Client(relay.url)
            while not stop.is_set():
                assert w.post("/api/orchestrators/o1/heartbeat").status == 200
            w.close()

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            r = audit(relay.data_dir, "verify")
        finally:
            stop.set()
            writer.join()
        assert r.returncode == 0, r.stdout + r.stderr
        assert c.post("/api/orchestrators/o1/heartbeat").status == 200
        c.close()


# -- verify's fast leaf loop ------------------------------------------------------------

from uuid import UUID  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from relay import chain, merkle  # noqa: E402
from relay.audit.verify import _leaf_hashes  # noqa: E402


@given(
    rows=st.lists(
        st.tuples(
            st.integers(1, 2**62),
            st.uuids(),
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=20),
            st.binary(max_size=200),
        ),
        max_size=20,
    )
)
def test_the_fast_leaves_are_the_chain_links_leaves(
    rows: list[tuple[int, UUID, bool, int, str, bytes]],
) -> None:
    """Verify's batched leaf hashes (struct-packed, cached ids and topics) must be byte for
    byte merkle.leaf_hash(chain.link(...)), for ids given as UUIDs (archive) or text (SQLite);
    packing the version unsigned, or the position signed, would fail here."""
    raw = [(p, o if as_uuid else str(o), v, t, s) for p, o, as_uuid, v, t, s in rows]
    assert _leaf_hashes(raw) == [merkle.leaf_hash(chain.link(p, o, v, t, s)) for p, o, v, t, s in raw]
