"""Spawn's ``worktree`` and ``resume``, shutdown's ``removeWorktree`` at the relay (ADR 0034).

A real relay on a real socket: what it records for the host, what it refuses
(400 naming the field, nothing appended), and what it shows of a managed
agent's worktree and session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from tests.http.helpers import full_log, managed, register_orchestrator
from tests.http.test_contract import refused
from tests.support.client import Client
from tests.support.server import RelayProcess

SID = "4f1c2b9e-3a57-4d0e-9d7a-2b1f0c8e6a11"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for the module (each test has its own orchestrator); no background passes,
    so "appends nothing" is exact."""
    data: Path = tmp_path_factory.mktemp("worktree") / "data"
    proc = RelayProcess(data, ["--reap-every", "3600", "--seal-every", "0"]).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(relay: RelayProcess) -> Iterator[Client]:
    c = Client(relay.url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def oid(client: Client) -> str:
    """A registered orchestrator of this test's own."""
    name = f"o-{uuid.uuid4().hex[:8]}"
    register_orchestrator(client, name)
    return name


def _schema(client: Client, name: str) -> dict[str, Any]:
    doc = client.get("/api/openapi.json").json
    return {**doc["components"]["schemas"][name], "components": doc["components"]}


def test_spawn_carries_worktree_and_resume_to_the_host(client: Client, oid: str) -> None:
    r = client.post(f"/api/orchestrators/{oid}/spawn", {
        "provider": "claude", "cwd": "proj", "worktree": {"branch": "feature/login-ä"},
        "resume": SID,
    })
    assert r.status == 202, r
    cmd = r.json["command"]
    assert cmd["worktree"] == {"branch": "feature/login-ä"} and cmd["resume"] == SID
    # A derived branch is asked for with {} (or a null branch): recorded as null.
    r2 = client.post("/api/agents/spawn", {"provider": "codex", "worktree": {}})
    assert r2.status == 202, r2
    assert r2.json["command"]["worktree"] == {"branch": None}
    assert "resume" not in r2.json["command"]
    # A spawn without them reads exactly as before.
    plain = client.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude"}).json["command"]
    assert "worktree" not in plain and "resume" not in plain

    command_schema = _schema(client, "Command")
    for c in client.get(f"/api/orchestrators/{oid}/commands").json:
        jsonschema_rs.validate(c, command_schema)
    # The host reads the same from its pending list, and the control message mirrors it.
    pending = {c["id"]: c for c in client.get(f"/api/orchestrators/{oid}/commands?status=pending").json}
    assert pending[cmd["id"]]["worktree"] == {"branch": "feature/login-ä"}
    note = client.get(f"/api/messages/{cmd['id']}").json
    control = note["meta"]["orchestratorControl"]
    assert control["worktree"] == {"branch": "feature/login-ä"} and control["resume"] == SID


def test_shutdown_may_ask_to_remove_the_worktree(client: Client, oid: str) -> None:
    client.patch(f"/api/orchestrators/{oid}/agents", {"agents": [managed("a1")]})
    r = client.post(f"/api/orchestrators/{oid}/actions",
                    {"action": "shutdown", "agentId": "a1", "removeWorktree": True})
    assert r.status == 202, r
    assert r.json["command"]["removeWorktree"] is True
    plain = client.post(f"/api/orchestrators/{oid}/actions", {"action": "shutdown", "removeWorktree": False})
    assert plain.status == 202 and "removeWorktree" not in plain.json["command"]
    control = client.get(f"/api/messages/{r.json['command']['id']}").json["meta"]["orchestratorControl"]
    assert control["removeWorktree"] is True


BAD_SPAWNS: list[tuple[dict[str, Any], list[str]]] = [
    ({"worktree": "yes"}, ["worktree:", "object"]),
    ({"worktree": {"branch": "bad..name"}}, ["worktree.branch:", "'..'"]),
    ({"worktree": {"branch": "-f"}}, ["worktree.branch:", "'-'"]),
    ({"worktree": {"branch": "a b"}}, ["worktree.branch:", "' '"]),
    ({"worktree": {"branch": "x.lock"}}, ["worktree.branch:", ".lock"]),
    ({"worktree": {"branch": "HEAD"}}, ["worktree.branch:", "HEAD"]),
    ({"worktree": {"branch": "b" * 201}}, ["worktree.branch:", "200"]),
    ({"worktree": {"branch": 7}}, ["worktree.branch:"]),
    ({"resume": "--dangerously-skip-permissions"}, ["resume:", "session id"]),
    ({"resume": "a;rm -rf"}, ["resume:"]),
    ({"resume": "{session}"}, ["resume:"]),
    ({"resume": "x" * 129}, ["resume:", "128"]),
    ({"resume": 12}, ["resume:"]),
]


def test_bad_worktree_or_resume_is_400_and_appends_nothing(client: Client, oid: str) -> None:
    for body, words in BAD_SPAWNS:
        for path in (f"/api/orchestrators/{oid}/spawn", "/api/agents/spawn"):
            refused(client, lambda p=path, b=body: client.post(p, {"provider": "claude", **b}),
                    400, *words)


def test_remove_worktree_is_a_shutdowns_option_only(client: Client, oid: str) -> None:
    refused(client, lambda: client.post(
        f"/api/orchestrators/{oid}/actions", {"action": "restart", "removeWorktree": True}
    ), 400, "removeWorktree:", "shutdown")
    refused(client, lambda: client.post(
        f"/api/orchestrators/{oid}/actions", {"action": "shutdown", "removeWorktree": "yes"}
    ), 400, "removeWorktree:")
    # The document says the same: the schema refuses it too.
    schema = _schema(client, "ActionRequest")
    validator = jsonschema_rs.Draft202012Validator(schema)
    assert not validator.is_valid({"action": "restart", "removeWorktree": True})
    assert validator.is_valid({"action": "restart", "removeWorktree": False})
    assert validator.is_valid({"action": "shutdown", "removeWorktree": True})


def test_managed_agents_report_worktree_branch_and_session(client: Client, oid: str) -> None:
    agent = managed("a1", cwd="/srv/work/.relay/worktrees/a1/sub",
                    worktree="/srv/work/.relay/worktrees/a1", branch="relay/a1", sessionId=SID)
    r = client.patch(f"/api/orchestrators/{oid}/agents", {"agents": [agent]})
    assert r.status == 200, r
    shown = client.get(f"/api/orchestrators/{oid}").json["managedAgents"][0]
    assert (shown["worktree"], shown["branch"], shown["sessionId"]) == (
        "/srv/work/.relay/worktrees/a1", "relay/a1", SID,
    )
    jsonschema_rs.validate(client.get(f"/api/orchestrators/{oid}").json, _schema(client, "Orchestrator"))

    head = len(full_log(client))
    refused(client, lambda: client.patch(f"/api/orchestrators/{oid}/agents", {"agents": [
        managed("a1", worktree="/elsewhere/wt")
    ]}), 400, "agents[0].worktree", "not inside")
    refused(client, lambda: client.patch(f"/api/orchestrators/{oid}/agents", {"agents": [
        managed("a1", sessionId="-x")
    ]}), 400, "agents[0].sessionId")
    refused(client, lambda: client.patch(f"/api/orchestrators/{oid}/agents", {"agents": [
        managed("a1", worktree="relative/wt")
    ]}), 400, "agents[0].worktree", "absolute")
    assert len(full_log(client)) == head
