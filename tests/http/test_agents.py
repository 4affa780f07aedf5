"""Agents over a real socket: registration, listing, heartbeat, removal."""

from __future__ import annotations

from tests.http.helpers import register_agent, register_orchestrator
from tests.support.client import Client


def test_register_returns_the_agent_with_defaults(client: Client) -> None:
    r = register_agent(client, "a1", tags=["gpu", "gpu", "x"], meta={"k": "v"})
    a = r.json
    assert a["id"] == "a1"
    assert a["name"] == "a1"
    assert a["tags"] == ["gpu", "x"]
    assert a["status"] == "online"
    assert a["meta"] == {"k": "v"}
    assert a["lastSeen"] == a["createdAt"] > 1_600_000_000_000
    assert client.get("/api/agents/a1").json == a


def test_reregistration_updates_fields_and_keeps_created_at(client: Client) -> None:
    first = register_agent(client, "a1", name="one").json
    second = register_agent(client, "a1", name="two", label="L", machine="m").json
    assert second["name"] == "two" and second["label"] == "L" and second["machine"] == "m"
    assert second["createdAt"] == first["createdAt"]
    assert [e["type"] for e in client.get("/api/log").json["events"]] == [
        "AgentRegistered",
        "AgentReregistered",
    ]


def test_list_is_sorted_and_filters_by_status(client: Client) -> None:
    for aid in ("b", "c", "a"):
        register_agent(client, aid)
    assert [a["id"] for a in client.get("/api/agents").json] == ["a", "b", "c"]
    assert [a["id"] for a in client.get("/api/agents?status=online").json] == ["a", "b", "c"]
    assert client.get("/api/agents?status=offline").json == []
    r = client.get("/api/agents?status=sleepy")
    assert r.status == 400 and "status" in r.json["error"]


def test_heartbeat_updates_last_seen(client: Client) -> None:
    before = register_agent(client, "a1").json["lastSeen"]
    head = client.log_head()
    assert client.post("/api/agents/a1/heartbeat").json == {"ok": True}
    assert client.log_head() == head + 1
    assert client.get("/api/agents/a1").json["lastSeen"] >= before


def test_delete_removes_and_removed_stays_removed(client: Client) -> None:
    register_agent(client, "a1")
    assert client.delete("/api/agents/a1").json == {"ok": True}
    head = client.log_head()
    for r in (
        client.get("/api/agents/a1"),
        client.post("/api/agents/a1/heartbeat"),
        client.delete("/api/agents/a1"),
    ):
        assert r.status == 404, r
        assert "a1" in r.json["error"]
    assert client.log_head() == head
    assert client.get("/api/agents").json == []
    again = register_agent(client, "a1").json
    assert again["status"] == "online"


def test_unknown_agent_is_404_and_appends_nothing(client: Client) -> None:
    head = client.log_head()
    assert client.get("/api/agents/ghost").status == 404
    assert client.post("/api/agents/ghost/heartbeat").status == 404
    assert client.delete("/api/agents/ghost").status == 404
    assert client.log_head() == head


def test_orchestrator_is_also_an_agent(client: Client) -> None:
    register_orchestrator(client, "o1", hostname="alpha")
    a = client.get("/api/agents/orchestrator-o1").json
    assert a["status"] == "online" and a["name"] == "alpha"
    assert a["meta"] == {"orchestratorId": "o1"}
    # heartbeating it as an agent heartbeats the orchestrator
    head = client.log_head()
    assert client.post("/api/agents/orchestrator-o1/heartbeat").status == 200
    assert client.get(f"/api/log?after={head}").json["events"][0]["type"] == (
        "OrchestratorHeartbeatReceived"
    )
    r = client.delete("/api/agents/orchestrator-o1")
    assert r.status == 409 and "remove the orchestrator" in r.json["error"]
    r = client.post("/api/agents", {"id": "orchestrator-x"})
    assert r.status == 400 and "reserved" in r.json["error"]
    # removing the orchestrator removes its agent record
    assert client.delete("/api/orchestrators/o1").status == 200
    assert client.get("/api/agents/orchestrator-o1").status == 404
    assert client.get("/api/agents").json == []


def test_spawn_anywhere_picks_first_online_by_hostname_offering_provider(client: Client) -> None:
    register_orchestrator(client, "o1", hostname="zulu", providers=["claude", "codex"])
    register_orchestrator(client, "o2", hostname="alpha", providers=["claude"])
    register_orchestrator(client, "o3", hostname="bravo", providers=["codex"])
    r = client.post("/api/agents/spawn", {"provider": "codex", "label": "L"})
    assert r.status == 202, r
    assert r.json["orchestratorId"] == "o3"
    assert r.json["provider"] == "codex"
    assert r.json["command"]["kind"] == "spawn"
    r = client.post("/api/agents/spawn", {"provider": "claude"})
    assert r.json["orchestratorId"] == "o2"


def test_spawn_anywhere_409_when_nobody_offers_it(client: Client) -> None:
    register_orchestrator(client, "o1", providers=["claude"])
    head = client.log_head()
    r = client.post("/api/agents/spawn", {"provider": "codex"})
    assert r.status == 409 and "codex" in r.json["error"]
    assert client.log_head() == head
