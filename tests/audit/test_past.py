"""The past equals what was live then: ``state --at`` and ``?at=`` for every position,
entity history (CLI and HTTP), and export."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.cli import main
from tests.audit.conftest import Audit
from tests.http.helpers import full_log, managed, register_agent, register_orchestrator
from tests.support.client import Client
from tests.support.server import RelayProcess


def live_state(c: Client) -> dict[str, Any]:
    """The read models as the API shows them now, in ``relay audit state``'s shape."""
    orchestrators = c.get("/api/orchestrators").json
    commands = [cmd for o in orchestrators for cmd in c.get(f"/api/orchestrators/{o['id']}/commands").json]
    return {
        "orchestrators": orchestrators,
        "agents": c.get("/api/agents").json,
        "managedAgents": c.get("/api/managed-agents").json,
        "commands": commands,
        "messages": c.get("/api/messages?limit=1000").json["messages"],
    }


def scripted(c: Client) -> list[Callable[[], Any]]:
    """Every kind of event, reaping and a re-registration after removal included."""

    def reap_until_someone_is() -> None:
        deadline = time.monotonic() + 10
        while not c.post("/api/system/reap").json["reapedOrchestratorIds"]:
            assert time.monotonic() < deadline, "nobody went stale"
            time.sleep(0.05)  # staleness is time passing: ask again shortly

    spawned: list[str] = []

    def fresh(oid: str, path: str, body: dict[str, Any]) -> Any:
        """A command right after a heartbeat: silent longer than stale-after, a host takes none."""
        assert c.post(f"/api/orchestrators/{oid}/heartbeat").status == 200
        r = c.post(f"/api/orchestrators/{oid}/{path}", body)
        assert r.status == 202, r
        return r.json

    def spawn() -> None:
        cmd = fresh("o1", "spawn", {"provider": "codex", "cwd": "x"})
        spawned.append(cmd["command"]["id"])

    def fail_it() -> None:
        result = {"status": "failed", "error": "no"}
        c.post(f"/api/orchestrators/o1/commands/{spawned[-1]}/result", result)

    return [
        lambda: register_orchestrator(c, "o1", hostname="zeta"),
        lambda: register_orchestrator(c, "o2", hostname="alpha"),
        lambda: register_agent(c, "a1", tags=["x"], label="first"),
        lambda: c.post("/api/orchestrators/o1/heartbeat"),
        lambda: c.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1"), managed("m2")]}),
        lambda: fresh("o1", "spawn", {"provider": "claude", "cwd": "w"}),
        spawn,
        fail_it,
        lambda: fresh("o2", "actions", {"action": "restart"}),
        lambda: register_agent(c, "a1", tags=["y"], label="again"),
        lambda: c.post("/api/agents/a1/heartbeat"),
        reap_until_someone_is,
        lambda: c.post("/api/orchestrators/o2/heartbeat"),
        lambda: c.delete("/api/agents/a1"),
        lambda: c.delete("/api/orchestrators/o1"),
        lambda: register_orchestrator(c, "o1", hostname="zeta-2"),
        lambda: c.patch("/api/orchestrators/o1/agents", {"agents": [managed("m3")]}),
    ]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A relay that ran the script, with the live state captured after each step."""
    data = tmp_path_factory.mktemp("past") / "data"
    relay = RelayProcess(
        data, ["--seal-every", "5", "--stale-after", "0.3", "--reap-every", "3600"]
    ).start()
    c = Client(relay.url)
    captured: dict[int, dict[str, Any]] = {0: live_state(c)}
    times: list[tuple[datetime, int]] = []
    for step in scripted(c):
        step()
        head = c.log_head()
        captured[head] = live_state(c)
        times.append((datetime.now(UTC), head))
    yield relay, c, captured, times
    c.close()
    relay.stop()


def audit_in_process(data: Path, *args: str) -> Any:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["audit", "--data", str(data), *args]) == 0
    return orjson.loads(out.getvalue())


def state_at(data: Path, position: int, capsysbinary: Any) -> dict[str, Any]:
    assert main(["audit", "--data", str(data), "state", "--at", str(position)]) == 0
    got = orjson.loads(capsysbinary.readouterr().out)
    assert got.pop("position") == position
    return dict(got)


def test_state_at_every_position_equals_what_was_live_then(history: Any, capsysbinary: Any) -> None:
    relay, c, captured, _ = history
    head = c.log_head()
    # Every moment a client could observe: after each step (a step may append a
    # command and its message together, and a seal right after; no client can
    # see between those, so there is no live state to compare there).
    assert len(captured) == len(scripted(c)) + 1 and max(captured) == head
    for position, live in captured.items():
        assert state_at(relay.data_dir, position, capsysbinary) == live, position


def test_at_over_http_equals_the_cli_at_every_position(history: Any, capsysbinary: Any) -> None:
    relay, c, captured, _ = history
    head = c.log_head()
    for position in range(head + 1):
        want = state_at(relay.data_dir, position, capsysbinary)
        if position in captured:
            assert want == captured[position]
        q = f"?at={position}"
        assert c.get("/api/orchestrators" + q).json == want["orchestrators"], position
        assert c.get("/api/agents" + q).json == want["agents"], position
        assert c.get("/api/managed-agents" + q).json == want["managedAgents"], position
    assert c.get(f"/api/agents?at={head}&status=offline").json == [
        a for a in want["agents"] if a["status"] == "offline"
    ]
    for bad in ("-1", "x", str(head + 1)):
        r = c.get(f"/api/orchestrators?at={bad}")
        assert r.status == 400 and r.json["error"].startswith("at"), r


def test_state_at_a_time_and_as_a_user_runs_it(history: Any, audit: Audit) -> None:
    relay, _, captured, times = history
    for when, head in (times[2], times[9], times[-1]):
        r = audit(relay.data_dir, "state", "--at", when.isoformat(), check=True)
        got = orjson.loads(r.stdout)
        got.pop("position")
        assert got == captured[head]
    r = audit(relay.data_dir, "state", "--at", "yesterday")
    assert r.returncode == 2 and "--at" in r.stderr


def test_entity_history_over_http_and_in_the_terminal(history: Any, audit: Audit) -> None:
    relay, c, _, _ = history
    log = {e["position"]: e for e in full_log(c)}
    mine = [p for p, e in log.items() if e["entityId"] == "o1" and e["entityKind"] == "orchestrator"]
    pages: list[dict[str, Any]] = []
    after = 0
    while True:
        page = c.get(f"/api/orchestrators/o1/history?after={after}&limit=3").json
        pages.extend(page["events"])
        if not page["events"]:
            break
        after = page["next"]
    assert [e["position"] for e in pages] == mine
    assert pages == [log[p] for p in mine]
    assert c.get("/api/agents/orchestrator-o1/history").json["events"] == pages[:100]
    assert [e["type"] for e in c.get("/api/agents/a1/history").json["events"]][-1] == "AgentRemoved"
    assert c.get("/api/orchestrators/nobody/history").status == 404
    assert c.get("/api/orchestrators/o1/history?limit=0").status == 400

    r = audit(relay.data_dir, "history", "o1", check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == "orchestrator o1"
    # One row per event; a long row wraps onto indented lines with no position.
    assert [int(line.split()[0]) for line in lines[1:] if line[:9].strip()] == mine
    assert "removed" in r.stdout and "hostname zeta → zeta-2" not in r.stdout  # re-created, not renamed
    rows = [orjson.loads(x) for x in audit(relay.data_dir, "history", "a1", "--json").stdout.splitlines()]
    label = [row["changes"]["label"] for row in rows if "label" in row["changes"]]
    assert label == [[None, "first"], ["first", "again"]]
    assert audit(relay.data_dir, "history", "nobody").returncode == 2


def test_export_is_the_log_line_by_line(history: Any, audit: Audit, tmp_path: Path) -> None:
    relay, c, _, _ = history
    out = tmp_path / "log.jsonl"
    audit(relay.data_dir, "export", "--format", "jsonl", "--output", str(out), check=True)
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    log = full_log(c)
    assert [x["position"] for x in lines] == [e["position"] for e in log]
    for x, e in zip(lines, log, strict=True):
        assert (x["type"], x["entityId"], x["at"], x["data"]) == (
            e["type"], e["entityId"], e["at"], e["data"],
        )
    after = log[-3]["position"]
    piped = audit(relay.data_dir, "export", "--after", str(after), check=True)
    assert [orjson.loads(x)["position"] for x in piped.stdout.splitlines()] == [
        e["position"] for e in log if e["position"] > after
    ]
