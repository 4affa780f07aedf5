"""``relay migrate``: a SQLite log copied to PostgreSQL, same order, content and positions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.http.helpers import full_log, managed, register_agent, register_orchestrator, snapshot
from tests.postgres.conftest import Connect, NodeFactory
from tests.support.postgres import new_schema
from tests.support.server import RelayProcess

pytestmark = pytest.mark.postgres


def relay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=120)


def sqlite_log(
    folder: Path, connect: Connect, tag: str = ""
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """A SQLite relay's log with every kind of event (and seals), stopped; its log and read models."""
    with RelayProcess(folder, ["--seal-every", "25", "--stale-after", "0.05", "--reap-every", "3600"],
                      store="sqlite") as relay:
        c = connect(relay.url)
        register_orchestrator(c, f"o1{tag}", providers=["claude"])
        for i in range(40):
            register_agent(c, f"a{i}{tag}")
            assert c.post(f"/api/agents/a{i}{tag}/heartbeat").status == 200
        assert c.patch(f"/api/orchestrators/o1{tag}/agents", {"agents": [managed("m1")]}).status == 200
        # stale-after is 50 ms: a spawn is accepted only right after a heartbeat.
        for _ in range(50):
            assert c.post(f"/api/orchestrators/o1{tag}/heartbeat").status == 200
            r = c.post(f"/api/orchestrators/o1{tag}/spawn", {"provider": "claude"})
            if r.status == 202:
                break
            assert r.status == 409 and "silent" in r.json["error"], r
        assert r.status == 202, r
        assert c.delete(f"/api/agents/a0{tag}").status == 200
        assert c.post("/api/system/reap").status == 200
        return full_log(c), snapshot(c)


def test_migrate_copies_the_log_and_audit_verify_passes(
    tmp_path: Path, connect: Connect, node: NodeFactory, log_dsn: str, pg_dsn: str
) -> None:
    log, models = sqlite_log(tmp_path / "sqlite", connect)
    assert any(e["type"] == "LogSealed" for e in log), "the source should carry seals"
    r = relay_cli("migrate", "--from", f"sqlite:{tmp_path / 'sqlite'}", "--to", f"postgres:{log_dsn}",
                  "--batch", "30")
    assert r.returncode == 0, r.stderr
    assert "copied up to position" in r.stderr and "(100%)" in r.stderr  # progress
    assert f"copied {len(log)} events" in r.stdout

    # The copy verifies (positions, versions, seals) with the audit tool...
    v = relay_cli("audit", "--store", "postgres", "--postgres-dsn", log_dsn,
                  "--data", str(tmp_path / "audit"), "verify")
    assert v.returncode == 0, v.stdout + v.stderr
    # ...and a relay on it serves the same log and the same read models.
    pg = node("pg")
    c = connect(pg.url)
    assert full_log(c) == log
    assert snapshot(c) == models
    assert c.post("/api/agents", {"id": "after"}).status == 201
    assert full_log(c)[-1]["position"] > log[-1]["position"]

    # Once a relay has written to the copy, it is no longer a copy: refused.
    again = relay_cli("migrate", "--from", f"sqlite:{tmp_path / 'sqlite'}", "--to", f"postgres:{log_dsn}")
    assert again.returncode == 1
    assert "not a copy of this one" in again.stderr


@pytest.mark.slow
def test_migrate_again_copies_only_what_was_added_and_refuses_a_foreign_log(
    tmp_path: Path, connect: Connect, pg_dsn: str
) -> None:
    sqlite_log(tmp_path / "one", connect)
    _, dsn = new_schema(pg_dsn)
    source, target = f"sqlite:{tmp_path / 'one'}", f"postgres:{dsn}"
    first = relay_cli("migrate", "--from", source, "--to", target)
    assert first.returncode == 0, first.stderr
    # The SQLite relay ran on (a copy made ahead of the cutover); a second run catches up.
    with RelayProcess(tmp_path / "one", store="sqlite") as relay:
        c = connect(relay.url)
        for i in range(7):
            register_agent(c, f"late{i}")
        log = full_log(c)
    again = relay_cli("migrate", "--from", source, "--to", target)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr and "copied 7 events" in again.stdout
    with RelayProcess(tmp_path / "pg", store="postgres", postgres_dsn=dsn) as relay:
        assert full_log(connect(relay.url)) == log
    # Another log's events are not appended to this copy.
    sqlite_log(tmp_path / "two", connect, tag="x")
    foreign = relay_cli("migrate", "--from", f"sqlite:{tmp_path / 'two'}", "--to", target)
    assert foreign.returncode == 1
    assert "not a copy of this one" in foreign.stderr
    missing = relay_cli("migrate", "--from", f"sqlite:{tmp_path / 'nowhere'}", "--to", target)
    assert missing.returncode == 1 and "no relay log" in missing.stderr
