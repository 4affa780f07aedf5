"""Every rejection of the contract: the right status, a message naming the
problem, and nothing appended to the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.http.helpers import managed, register_orchestrator
from tests.support.client import Client, Response
from tests.support.server import RelayProcess

JSON = {"Content-Type": "application/json"}


def rejected(client: Client, call: Callable[[], Response], status: int, mention: str) -> None:
    head = client.log_head()
    r = call()
    assert r.status == status, r
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json) == {"error"}, r.json
    assert mention.lower() in r.json["error"].lower(), r.json
    assert client.log_head() == head, "a rejected request appended to the log"


@pytest.mark.parametrize(
    ("body", "mention"),
    [
        ({}, "id"),
        ({"id": ""}, "id"),
        ({"id": "a/b", "hostname": "h", "baseDir": "/x"}, "id"),
        ({"id": "a b", "hostname": "h", "baseDir": "/x"}, "id"),
        ({"id": "x" * 121, "hostname": "h", "baseDir": "/x"}, "id"),
        ({"id": 7, "hostname": "h", "baseDir": "/x"}, "id"),
        ({"id": "o", "baseDir": "/x"}, "hostname"),
        ({"id": "o", "hostname": "h"}, "baseDir"),
        ({"id": "o", "hostname": "h", "baseDir": "relative/dir"}, "baseDir"),
        ({"id": "o", "hostname": "h", "baseDir": "/x", "providers": ["gpt"]}, "providers"),
        ({"id": "o", "hostname": "h", "baseDir": "/x", "providers": []}, "providers"),
        ({"id": "o", "hostname": "h", "baseDir": "/x", "providers": "claude"}, "providers"),
        ({"id": "o", "hostname": "h", "baseDir": "/x", "envKeys": ["A=secret"]}, "envKeys"),
        ({"id": "o", "hostname": "h", "baseDir": "/x", "meta": [1]}, "meta"),
        ({"id": "o", "hostname": "h" * 201, "baseDir": "/x"}, "hostname"),
    ],
)
def test_orchestrator_registration_rejections(client: Client, body: dict[str, Any], mention: str) -> None:
    rejected(client, lambda: client.post("/api/orchestrators", body), 400, mention)


@pytest.mark.parametrize(
    ("body", "mention"),
    [
        ({"name": "x"}, "id"),
        ({"id": "a", "tags": "x"}, "tags"),
        ({"id": "a", "tags": [1]}, "tags"),
        ({"id": "a", "tags": ["t"] * 65}, "tags"),
        ({"id": "a", "capabilities": [None]}, "capabilities"),
        ({"id": "a", "meta": "x"}, "meta"),
        ({"id": "a", "name": 5}, "name"),
    ],
)
def test_agent_registration_rejections(client: Client, body: dict[str, Any], mention: str) -> None:
    rejected(client, lambda: client.post("/api/agents", body), 400, mention)


def test_body_must_be_a_json_object(client: Client) -> None:
    rejected(client, lambda: client.post("/api/agents", body=b"{", headers=JSON), 400, "json")
    rejected(client, lambda: client.post("/api/agents", body=b"[1]", headers=JSON), 400, "object")
    rejected(client, lambda: client.post("/api/agents", body=b"\xff\xfe", headers=JSON), 400, "json")
    rejected(client, lambda: client.post("/api/agents", body=b""), 400, "body")
    rejected(
        client,
        lambda: client.post("/api/agents", body=b"id=a", headers={"Content-Type": "text/plain"}),
        415,
        "json",
    )


def test_body_over_the_limit_is_413(client: Client) -> None:
    big = b'{"id": "a", "meta": {"x": "' + b"y" * (1024 * 1024) + b'"}}'
    rejected(client, lambda: client.post("/api/agents", body=big, headers=JSON), 413, "limit")


def test_smaller_body_limit_is_configurable(tmp_path: Any) -> None:
    with RelayProcess(tmp_path / "d", ["--max-body", "2048"]) as relay:
        c = Client(relay.url)
        ok = c.post("/api/agents", {"id": "a", "meta": {"x": "y" * 1000}})
        assert ok.status == 201
        rejected(c, lambda: c.post("/api/agents", {"id": "b", "meta": {"x": "y" * 3000}}), 413, "2048")
        c.close()


def test_unknown_path_and_wrong_method(client: Client) -> None:
    rejected(client, lambda: client.get("/api/nothing-here"), 404, "/api/nothing-here")
    rejected(client, lambda: client.request("PUT", "/api/agents"), 405, "PUT")
    r = client.request("PUT", "/api/orchestrators")
    assert "POST" in r.headers.get("allow", "")


def test_unknown_ids_are_404(client: Client) -> None:
    for call in (
        lambda: client.get("/api/orchestrators/ghost"),
        lambda: client.post("/api/orchestrators/ghost/heartbeat"),
        lambda: client.patch("/api/orchestrators/ghost/agents", {"agents": []}),
        lambda: client.post("/api/orchestrators/ghost/spawn", {"provider": "claude"}),
        lambda: client.post("/api/orchestrators/ghost/actions", {"action": "restart"}),
        lambda: client.get("/api/orchestrators/ghost/commands"),
        lambda: client.post("/api/orchestrators/ghost/commands/c1/result", {"status": "done"}),
        lambda: client.delete("/api/orchestrators/ghost"),
    ):
        rejected(client, call, 404, "ghost")


def test_spawn_rejections(client: Client) -> None:
    register_orchestrator(client, "o1", baseDir="/srv/a", providers=["claude"])
    spawn = "/api/orchestrators/o1/spawn"
    rejected(client, lambda: client.post(spawn, {"provider": "codex"}), 400, "provider")
    rejected(client, lambda: client.post(spawn, {}), 400, "provider")
    rejected(client, lambda: client.post(spawn, {"provider": "gpt"}), 400, "provider")
    for cwd in ("/srv/a2", "/srv/a/../b", "../b", "/etc", "/srv/a/x/../../a2"):
        rejected(client, lambda cwd=cwd: client.post(spawn, {"provider": "claude", "cwd": cwd}), 400, "cwd")
    rejected(client, lambda: client.post(spawn, {"provider": "claude", "prompt": "p" * 4001}), 400, "prompt")
    yolo = {"provider": "claude", "approvalMode": "yolo"}
    rejected(client, lambda: client.post(spawn, yolo), 400, "approvalMode")
    ok = client.post(spawn, {"provider": "claude", "prompt": "p" * 4000})
    assert ok.status == 202


def test_action_rejections(client: Client) -> None:
    register_orchestrator(client, "o1")
    act = "/api/orchestrators/o1/actions"
    rejected(client, lambda: client.post(act, {}), 400, "action")
    rejected(client, lambda: client.post(act, {"action": "reboot"}), 400, "action")
    rejected(client, lambda: client.post(act, {"action": "restart", "agentId": "nope"}), 404, "nope")


def test_result_rejections(client: Client) -> None:
    register_orchestrator(client, "o1")
    cmd = client.post("/api/orchestrators/o1/spawn", {"provider": "claude"}).json["command"]
    url = f"/api/orchestrators/o1/commands/{cmd['id']}/result"
    rejected(client, lambda: client.post(url, {"status": "maybe"}), 400, "status")
    rejected(client, lambda: client.post(url, {}), 400, "status")
    rejected(client, lambda: client.post(url, {"status": "failed", "error": 5}), 400, "error")
    nope = "/api/orchestrators/o1/commands/nope/result"
    rejected(client, lambda: client.post(nope, {"status": "done"}), 404, "nope")
    assert client.post(url, {"status": "done"}).status == 200
    rejected(client, lambda: client.post(url, {"status": "done"}), 409, "already")


def test_report_rejections(client: Client) -> None:
    register_orchestrator(client, "o1")
    url = "/api/orchestrators/o1/agents"
    rejected(client, lambda: client.patch(url, {}), 400, "agents")
    rejected(client, lambda: client.patch(url, {"agents": {}}), 400, "agents")
    rejected(client, lambda: client.patch(url, {"agents": [5]}), 400, "agents[0]")
    rejected(client, lambda: client.patch(url, {"agents": [{"provider": "claude"}]}), 400, "agentId")
    rejected(client, lambda: client.patch(url, {"agents": [managed("m", provider="x")]}), 400, "provider")
    rejected(client, lambda: client.patch(url, {"agents": [managed("m"), managed("m")]}), 400, "twice")
    rejected(client, lambda: client.patch(url, {"agents": [managed("m", pid=-1)]}), 400, "pid")
    rejected(client, lambda: client.patch(url, {"agents": [managed("m")] * 1001}), 400, "1000")


def test_query_rejections(client: Client) -> None:
    rejected(client, lambda: client.get("/api/log?after=x"), 400, "after")
    rejected(client, lambda: client.get("/api/log?limit=0"), 400, "limit")
    rejected(client, lambda: client.get("/api/log?limit=100000"), 400, "limit")
    register_orchestrator(client, "o1")
    rejected(client, lambda: client.get("/api/orchestrators/o1/commands?status=x"), 400, "status")


def test_offline_orchestrator_refuses_spawn_and_actions_with_409(tmp_path: Any) -> None:
    with RelayProcess(tmp_path / "d", ["--stale-after", "0.05", "--reap-every", "3600"]) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "o1")
        reaped = _reap_until(c, "o1")
        assert reaped
        rejected(c, lambda: c.post("/api/orchestrators/o1/spawn", {"provider": "claude"}), 409, "offline")
        rejected(c, lambda: c.post("/api/orchestrators/o1/actions", {"action": "restart"}), 409, "offline")
        rejected(c, lambda: c.post("/api/agents/spawn", {"provider": "claude"}), 409, "claude")
        c.close()


def _reap_until(c: Client, oid: str, deadline_s: float = 10.0) -> bool:
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if oid in c.post("/api/system/reap").json["reapedOrchestratorIds"]:
            return True
    return False
