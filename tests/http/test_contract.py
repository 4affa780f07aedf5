"""Contract defects a new user met (issue 12), each over a real socket.

Every refusal here is a clear 400/409 naming the problem, and appends nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from relay.clock import FakeClock
from relay.domain.rules import MAX_ID_CHARS, ORCHESTRATOR_AGENT_PREFIX
from tests.http.helpers import managed, register_orchestrator
from tests.property.inprocess import InProcessRelay
from tests.support.client import Client, Response

MAX_OID = MAX_ID_CHARS - len(ORCHESTRATOR_AGENT_PREFIX)


def refused(client: Client, call: Any, status: int, *words: str) -> Response:
    """``call()`` answers ``status`` with an error naming ``words``, and the log did not move."""
    head = client.log_head()
    r: Response = call()
    assert r.status == status, r
    assert isinstance(r.json, dict) and set(r.json) == {"error"}, r
    for word in words:
        assert word in r.json["error"], (word, r.json)
    assert client.log_head() == head
    return r


# -- the derived agent id fits the id limit -------------------------------------------


def _schema(client: Client, name: str) -> dict[str, Any]:
    doc = client.get("/api/openapi.json").json
    schema = dict(doc["components"]["schemas"][name])
    schema["components"] = doc["components"]  # for $ref
    return schema


def test_an_orchestrator_id_leaves_room_for_its_agent_id(client: Client) -> None:
    oid = "o" * MAX_OID
    r = register_orchestrator(client, oid)
    agent_id = r.json["agentId"]
    assert agent_id == ORCHESTRATOR_AGENT_PREFIX + oid and len(agent_id) == MAX_ID_CHARS
    # The derived id is a valid id: addressable, and on-schema in every answer.
    assert client.get(f"/api/agents/{agent_id}").status == 200
    agent_schema = _schema(client, "Agent")
    for agent in client.get("/api/agents").json:
        jsonschema_rs.validate(agent, agent_schema)
    jsonschema_rs.validate(client.get(f"/api/orchestrators/{oid}").json, _schema(client, "Orchestrator"))

    too_long = "o" * (MAX_OID + 1)
    refused(
        client,
        lambda: client.post(
            "/api/orchestrators", {"id": too_long, "hostname": "h", "baseDir": "/srv/w"}
        ),
        400,
        "id:",
        str(MAX_OID),
        ORCHESTRATOR_AGENT_PREFIX,
    )


def test_schema_and_validator_agree_on_the_orchestrator_id_length(client: Client) -> None:
    schema = _schema(client, "OrchestratorRegistration")
    for n in (MAX_OID - 1, MAX_OID, MAX_OID + 1, MAX_ID_CHARS, MAX_ID_CHARS + 1):
        body = {"id": "x" * (n - 3) + f"{n:03d}", "hostname": "h", "baseDir": "/srv/w"}
        valid = jsonschema_rs.Draft202012Validator(schema).is_valid(body)
        status = client.post("/api/orchestrators", body).status
        assert (status == 201) == valid, (n, status, valid)
        assert status in (201, 400)
        assert valid == (n <= MAX_OID)


# -- managed agent reports -----------------------------------------------------------


def test_a_managed_agent_report_needs_its_tmux_session(client: Client) -> None:
    register_orchestrator(client, "o1")
    url = "/api/orchestrators/o1/agents"
    bare = {k: v for k, v in managed("m1").items() if k != "tmuxSession"}
    for agent in (bare, {**bare, "tmuxSession": None}, {**bare, "tmuxSession": ""},
                  {**bare, "tmuxSession": "  "}):
        refused(client, lambda a=agent: client.patch(url, {"agents": [managed("m0"), a]}), 400,
                "agents[1].tmuxSession", "'m1'")
    assert client.get("/api/orchestrators/o1").json["managedAgents"] == []
    r = client.patch(url, {"agents": [managed("m1")]})
    assert r.status == 200 and r.json["managedAgents"][0]["tmuxSession"] == "tmux-m1"
    schema = _schema(client, "ManagedAgentReport")
    assert "tmuxSession" in schema["required"]
    assert not jsonschema_rs.Draft202012Validator(schema).is_valid(bare)


@pytest.mark.parametrize(
    "cwd", ["/etc", "/srv/work2", "/srv/work/../etc", "/srv", "..", "/", "a/../../x"]
)
def test_a_managed_agent_outside_the_base_dir_is_refused(client: Client, cwd: str) -> None:
    register_orchestrator(client, "o1")  # baseDir /srv/work
    refused(
        client,
        lambda: client.patch(
            "/api/orchestrators/o1/agents",
            {"agents": [managed("ok"), managed("stray", cwd=cwd)]},
        ),
        400,
        "agents[1].cwd",
        "'stray'",
        "/srv/work",
    )
    assert client.get("/api/managed-agents").json == []


def test_a_managed_agent_inside_the_base_dir_is_kept(client: Client) -> None:
    register_orchestrator(client, "o1")
    agents = [managed("m1", cwd="/srv/work"), managed("m2", cwd="/srv/work/app/x"),
              managed("m3", cwd="app"), managed("m4", cwd="/srv//work/./b/")]
    r = client.patch("/api/orchestrators/o1/agents", {"agents": agents})
    assert r.status == 200, r
    assert [m["cwd"] for m in r.json["managedAgents"]] == [
        "/srv/work", "/srv/work/app/x", "app", "/srv//work/./b/"
    ]


# -- availability judged on lastSeen and the clock -----------------------------------

STALE_AFTER_S = 90


@pytest.fixture
def held() -> Iterator[tuple[InProcessRelay, FakeClock]]:
    """A relay whose clock the test holds, and whose reaper never runs on its own."""
    import tempfile

    clock = FakeClock()
    with tempfile.TemporaryDirectory() as d, InProcessRelay(
        Path(d), clock, stale_after=float(STALE_AFTER_S), reap_every=3600.0
    ) as relay:
        yield relay, clock


def test_a_silent_but_unreaped_orchestrator_takes_no_commands(
    held: tuple[InProcessRelay, FakeClock],
) -> None:
    relay, clock = held
    c = Client(relay.url)
    try:
        register_orchestrator(c, "o1", providers=["claude"])
        assert c.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1")]}).status == 200
        clock.advance(STALE_AFTER_S * 1000)  # exactly stale-after: still online
        assert c.post("/api/orchestrators/o1/spawn", {"provider": "claude"}).status == 202
        clock.advance(1_001)
        # Not reaped: the record still says online...
        assert c.get("/api/orchestrators/o1").json["status"] == "online"
        # ...but by the rule it is offline, and every command says why.
        spawn = refused(c, lambda: c.post("/api/orchestrators/o1/spawn", {"provider": "claude"}),
                        409, "'o1'", "offline", "silent for 91.001 s", "stale-after (90 s)")
        assert "heartbeat" in spawn.json["error"]
        refused(c, lambda: c.post("/api/orchestrators/o1/actions", {"action": "restart"}),
                409, "'o1'", "offline", "stale-after")
        refused(c, lambda: c.post("/api/orchestrators/o1/actions",
                                  {"action": "shutdown", "agentId": "m1"}),
                409, "offline")
        refused(c, lambda: c.post("/api/agents/spawn", {"provider": "claude"}),
                409, "no online host offers claude", "stale-after")
        # A heartbeat brings it back at once.
        assert c.post("/api/orchestrators/o1/heartbeat").status == 200
        assert c.post("/api/orchestrators/o1/spawn", {"provider": "claude"}).status == 202
        assert c.post("/api/orchestrators/o1/actions", {"action": "restart"}).status == 202
    finally:
        c.close()


def test_spawn_anywhere_skips_a_silent_orchestrator(
    held: tuple[InProcessRelay, FakeClock],
) -> None:
    relay, clock = held
    c = Client(relay.url)
    try:
        register_orchestrator(c, "a-first", hostname="a.lan")  # first by hostname
        register_orchestrator(c, "b-second", hostname="b.lan")
        r = c.post("/api/agents/spawn", {"provider": "codex"})
        assert r.status == 202 and r.json["orchestratorId"] == "a-first", r
        clock.advance(STALE_AFTER_S * 1000 + 1)
        assert c.post("/api/orchestrators/b-second/heartbeat").status == 200
        r = c.post("/api/agents/spawn", {"provider": "codex"})
        assert r.status == 202 and r.json["orchestratorId"] == "b-second", r
        assert c.get("/api/orchestrators/a-first").json["status"] == "online"  # not reaped
    finally:
        c.close()
