"""One relay per data folder (issue 12): a second ``relay serve`` on a folder in use
refuses to start, ``kill -9`` never leaves a stale lock, and ``relay audit`` reads
beside a running relay without taking the lock or writing anything.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.postgres import drop_schema, new_schema, require_dsn
from tests.support.server import RelayProcess

QUIET = ["--reap-every", "3600", "--checkpoint-every", "1000000", "--seal-every", "2"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _second_serve(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``relay serve`` on ``data``; it must give up at once, so a timeout is a failure."""
    return subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1", "--port", "0",
         "--data", str(data), *extra],
        capture_output=True, text=True, env=_env(), timeout=60,
    )


def _audit(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), *args],
        capture_output=True, text=True, env=_env(), timeout=60,
    )


def _pid(relay: RelayProcess) -> int:
    assert relay.proc is not None
    return relay.proc.pid


def test_a_second_relay_on_a_folder_in_use_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RelayProcess(data, QUIET, store="sqlite") as first, closing(Client(first.url)) as c:
        assert c.post("/api/agents", {"id": "kept"}).status == 201
        second = _second_serve(data)
        assert second.returncode == 2, second.stderr + second.stdout
        assert "relay listening" not in second.stdout
        assert str(data.resolve()) in second.stderr
        assert f"process {_pid(first)}" in second.stderr
        assert "Traceback" not in second.stderr
        # The first relay is untouched and still the only writer.
        assert c.post("/api/agents", {"id": "after"}).status == 201
        assert {a["id"] for a in c.get("/api/agents").json} >= {"kept", "after"}
    # Once the first is stopped, the folder is free again.
    with RelayProcess(data, QUIET, store="sqlite") as again, closing(Client(again.url)) as c:
        assert c.get("/api/agents/after").status == 200


def test_kill_9_leaves_no_stale_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = RelayProcess(data, QUIET, store="sqlite").start()
    with closing(Client(first.url)) as c:
        assert c.post("/api/agents", {"id": "before-kill"}).status == 201
    pid = _pid(first)
    first.kill()  # SIGKILL: no cleanup runs; the lock file stays behind with its pid
    assert (data / "relay.lock").read_text().strip() == str(pid)
    with RelayProcess(data, QUIET, store="sqlite") as second:
        with closing(Client(second.url)) as c:
            assert c.get("/api/agents/before-kill").status == 200
        # ... and the new holder is the one named to a third.
        third = _second_serve(data)
        assert third.returncode == 2
        assert f"process {_pid(second)}" in third.stderr


def _fingerprint(data: Path) -> dict[str, tuple[int, str]]:
    """Every file of the folder with its mtime and content hash; ``-shm`` is SQLite's
    shared memory (readers take read marks there), not data."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(data.rglob("*")):
        if p.is_file() and not p.name.endswith("-shm"):
            out[str(p.relative_to(data))] = (
                p.stat().st_mtime_ns,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


def test_audit_reads_beside_a_running_relay_without_lock_or_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RelayProcess(data, QUIET, store="sqlite") as relay:
        with closing(Client(relay.url)) as c:
            for k in range(3):
                assert c.post("/api/agents", {"id": f"a{k}"}).status == 201
            head = c.log_head()
        before = _fingerprint(data)
        assert "relay.lock" in before
        runs = {
            "history": _audit(data, "history", "a1"),
            "state": _audit(data, "state", "--at", str(head)),
            "verify": _audit(data, "verify"),
            "export": _audit(data, "export", "--output", str(tmp_path / "out.jsonl")),
        }
        for name, r in runs.items():
            assert r.returncode == 0, f"audit {name}: {r.stderr}"
        assert "a1" in runs["history"].stdout
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == head
        assert _fingerprint(data) == before, "relay audit wrote to the data folder"
        # The running relay still holds the folder: audit neither took nor freed the lock.
        second = _second_serve(data)
        assert second.returncode == 2
        assert f"process {_pid(relay)}" in second.stderr


@pytest.mark.postgres
def test_postgres_data_folders_are_locked_too(tmp_path: Path) -> None:
    """A PostgreSQL relay's folder holds its SSE replay anchors: one relay per folder."""
    pg = require_dsn()
    schema, dsn = new_schema(pg)
    try:
        data = tmp_path / "pg"
        with RelayProcess(data, QUIET, store="postgres", postgres_dsn=dsn) as first:
            second = _second_serve(data, "--store", "postgres", "--postgres-dsn", dsn)
            assert second.returncode == 2, second.stderr
            assert f"process {_pid(first)}" in second.stderr
    finally:
        drop_schema(schema, pg)
