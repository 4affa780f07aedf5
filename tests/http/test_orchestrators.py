"""Orchestrators over a real socket: registration, commands, reports, removal."""

from __future__ import annotations

from pathlib import Path

from relay.clock import FakeClock
from tests.http.helpers import managed, register_orchestrator
from tests.property.inprocess import InProcessRelay
from tests.support.client import Client


def test_register_returns_orchestrator_and_token(client: Client) -> None:
    o = register_orchestrator(
        client, "o1", hostname="h1", baseDir="/srv/a/", envKeys=["API_KEY"], meta={"os": "linux"}
    ).json
    assert o["id"] == "o1" and o["hostname"] == "h1"
    assert o["status"] == "online"
    assert o["agentId"] == "orchestrator-o1"
    assert o["providers"] == ["claude", "codex"]
    assert o["baseDir"] == "/srv/a"
    assert o["envKeys"] == ["API_KEY"]
    assert o["managedAgents"] == []
    token = o.pop("orchestratorToken")
    assert isinstance(token, str) and len(token) >= 32
    assert o.pop("heartbeatIntervalMs") == 30_000  # stale-after 90 s / 3: the relay sets the pace
    assert client.get("/api/orchestrators/o1").json == o
    # only a hash of the token is in the log, and the raw log does not show even that
    log = client.get("/api/log").json["events"]
    assert token not in str(log)
    assert "tokenHash" not in log[0]["data"]


def test_reregistration_updates_rotates_token_and_keeps_managed_agents(client: Client) -> None:
    first = register_orchestrator(client, "o1", hostname="h1").json
    client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1")]})
    second = register_orchestrator(client, "o1", hostname="h2", providers=["codex"]).json
    assert second["orchestratorToken"] != first["orchestratorToken"]
    assert second["hostname"] == "h2" and second["providers"] == ["codex"]
    assert second["createdAt"] == first["createdAt"]
    assert [m["agentId"] for m in second["managedAgents"]] == ["m1"]


def test_list_sorted_by_hostname(client: Client) -> None:
    register_orchestrator(client, "o1", hostname="charlie")
    register_orchestrator(client, "o2", hostname="alpha")
    register_orchestrator(client, "o3", hostname="bravo")
    assert [o["id"] for o in client.get("/api/orchestrators").json] == ["o2", "o3", "o1"]
    register_orchestrator(client, "o2", hostname="zulu")
    assert [o["id"] for o in client.get("/api/orchestrators").json] == ["o3", "o1", "o2"]


def test_heartbeat(tmp_path: Path) -> None:
    """lastSeen moves to the heartbeat's receive time (a clock the test holds)."""
    clock = FakeClock()
    with InProcessRelay(tmp_path / "d", clock, reap_every=3600.0) as relay:
        client = Client(relay.url)
        try:
            o = register_orchestrator(client, "o1").json
            assert o["lastSeen"] == clock.now
            at = clock.advance(5_000)
            assert client.post("/api/orchestrators/o1/heartbeat").json == {"ok": True}
            after = client.get("/api/orchestrators/o1").json
            assert after["lastSeen"] == at == o["lastSeen"] + 5_000
            assert client.get("/api/agents/orchestrator-o1").json["lastSeen"] == at
            # The orchestrator's own agent record heartbeats the orchestrator.
            at = clock.advance(7_000)
            assert client.post("/api/agents/orchestrator-o1/heartbeat").json == {"ok": True}
            assert client.get("/api/orchestrators/o1").json["lastSeen"] == at
        finally:
            client.close()


def test_report_managed_agents_replaces_the_list(client: Client) -> None:
    register_orchestrator(client, "o1", hostname="h1")
    r = client.patch(
        "/api/orchestrators/o1/agents",
        {"agents": [managed("m1", label="first", pid=42), managed("m2", provider="codex")]},
    )
    assert r.status == 200, r
    assert [m["agentId"] for m in r.json["managedAgents"]] == ["m1", "m2"]
    assert r.json["managedAgents"][0]["pid"] == 42
    r = client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m3")]})
    assert [m["agentId"] for m in r.json["managedAgents"]] == ["m3"]
    everywhere = client.get("/api/managed-agents").json
    assert everywhere == [
        {
            **managed("m3"),
            "state": "running",
            # waits for nobody (issue 16)
            "attention": None,
            "attentionSince": None,
            "attentionReason": None,
            "attentionExcerpt": None,
            "orchestratorId": "o1",
            "hostname": "h1",
            "orchestratorStatus": "online",
        }
    ]


def test_spawn_records_a_pending_command(client: Client) -> None:
    register_orchestrator(client, "o1", baseDir="/srv/a")
    r = client.post(
        "/api/orchestrators/o1/spawn",
        {"provider": "claude", "cwd": "proj", "label": "fixer", "prompt": "fix it"},
    )
    assert r.status == 202, r
    cmd = r.json["command"]
    assert r.json["ok"] is True and r.json["orchestratorId"] == "o1"
    assert cmd["kind"] == "spawn" and cmd["status"] == "pending"
    assert cmd["cwd"] == "/srv/a/proj"
    assert cmd["approvalMode"] == "guarded"
    assert cmd["prompt"] == "fix it" and cmd["label"] == "fixer"
    assert cmd["requestedBy"] and cmd["requestedAt"] > 0
    assert client.get("/api/orchestrators/o1/commands").json == [cmd]
    assert client.get("/api/orchestrators/o1/commands?status=pending").json == [cmd]
    assert client.get("/api/orchestrators/o1/commands?status=done").json == []


def test_spawn_defaults_cwd_to_base_dir(client: Client) -> None:
    register_orchestrator(client, "o1", baseDir="/srv/a")
    r = client.post("/api/orchestrators/o1/spawn", {"provider": "codex", "approvalMode": "read-only"})
    assert r.json["command"]["cwd"] == "/srv/a"
    assert r.json["command"]["approvalMode"] == "read-only"


def test_actions_and_results(client: Client) -> None:
    register_orchestrator(client, "o1")
    client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1")]})
    r = client.post("/api/orchestrators/o1/actions", {"action": "restart", "agentId": "m1"})
    assert r.status == 202, r
    assert r.json["action"] == "restart"
    cmd = r.json["command"]
    assert (cmd["kind"], cmd["agentId"], cmd["status"]) == ("restart", "m1", "pending")
    r = client.post("/api/orchestrators/o1/actions", {"action": "shutdown"})
    assert r.json["command"]["agentId"] is None
    done = client.post(
        f"/api/orchestrators/o1/commands/{cmd['id']}/result", {"status": "done", "agentId": "m1"}
    )
    assert done.status == 200, done
    assert done.json["status"] == "done"
    assert done.json["result"]["agentId"] == "m1"
    again = client.post(f"/api/orchestrators/o1/commands/{cmd['id']}/result", {"status": "failed"})
    assert again.status == 409 and "already has a result" in again.json["error"]
    pending = client.get("/api/orchestrators/o1/commands?status=pending").json
    assert [c["kind"] for c in pending] == ["shutdown"]
    failed = client.post(
        f"/api/orchestrators/o1/commands/{pending[0]['id']}/result",
        {"status": "failed", "error": "tmux not found"},
    )
    assert failed.json["result"]["error"] == "tmux not found"


def test_remove_deletes_orchestrator_agent_and_commands(client: Client) -> None:
    register_orchestrator(client, "o1")
    client.post("/api/orchestrators/o1/spawn", {"provider": "claude"})
    client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1")]})
    assert client.delete("/api/orchestrators/o1").json == {"ok": True}
    head = client.log_head()
    for r in (
        client.get("/api/orchestrators/o1"),
        client.post("/api/orchestrators/o1/heartbeat"),
        client.patch("/api/orchestrators/o1/agents", {"agents": []}),
        client.post("/api/orchestrators/o1/spawn", {"provider": "claude"}),
        client.post("/api/orchestrators/o1/actions", {"action": "restart"}),
        client.get("/api/orchestrators/o1/commands"),
        client.delete("/api/orchestrators/o1"),
    ):
        assert r.status == 404, r
    assert client.log_head() == head
    assert client.get("/api/orchestrators").json == []
    assert client.get("/api/managed-agents").json == []
    fresh = register_orchestrator(client, "o1").json
    assert fresh["managedAgents"] == []
    assert client.get("/api/orchestrators/o1/commands").json == []


def test_read_your_writes_over_200_cycles(client: Client) -> None:
    register_orchestrator(client, "o1")
    for i in range(100):
        client.patch("/api/orchestrators/o1/agents", {"agents": [managed(f"m{i}")]})
        got = client.get("/api/orchestrators/o1").json["managedAgents"]
        assert [m["agentId"] for m in got] == [f"m{i}"]
        client.post("/api/agents", {"id": f"a{i}", "name": f"n{i}"})
        assert client.get(f"/api/agents/a{i}").json["name"] == f"n{i}"
