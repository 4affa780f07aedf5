"""Small builders shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

from tests.support.client import Client, Response


def register_orchestrator(client: Client, oid: str = "o1", **over: Any) -> Response:
    body: dict[str, Any] = {"id": oid, "hostname": f"host-{oid}", "baseDir": "/srv/work"}
    body.update(over)
    r = client.post("/api/orchestrators", body)
    assert r.status == 201, r
    return r


def register_agent(client: Client, aid: str = "a1", **over: Any) -> Response:
    body: dict[str, Any] = {"id": aid}
    body.update(over)
    r = client.post("/api/agents", body)
    assert r.status == 201, r
    return r


def managed(agent_id: str, **over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "agentId": agent_id,
        "provider": "claude",
        "tmuxSession": f"tmux-{agent_id}",
        "cwd": "/srv/work",
        "approvalMode": "guarded",
        "startedAt": 1_700_000_000_000,
    }
    m.update(over)
    return m


def snapshot(client: Client) -> dict[str, Any]:
    """Everything the read models answer, for equality checks across restarts."""
    out: dict[str, Any] = {
        "orchestrators": client.get("/api/orchestrators").json,
        "agents": client.get("/api/agents").json,
        "managed": client.get("/api/managed-agents").json,
    }
    for o in out["orchestrators"]:
        out[f"commands:{o['id']}"] = client.get(f"/api/orchestrators/{o['id']}/commands").json
    return out


def full_log(client: Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get(f"/api/log?after={after}&limit=1000").json
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["next"]
