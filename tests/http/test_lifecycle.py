"""Truthful fleet state (issue 15) over a real socket, with a clock the test holds.

Placement by capacity, commands that always end, managed agents that say
when their host is gone, and the reaper's brake in a mass outage. The relay
runs in this process (tests/property/inprocess.py) so that time moves only
when the test moves it: nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.clock import FakeClock
from tests.http.helpers import full_log, managed, register_orchestrator
from tests.property.inprocess import InProcessRelay
from tests.support.client import Client

STALE_S = 90.0
T0 = 1_700_000_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def relay(tmp_path: Path, clock: FakeClock) -> Iterator[InProcessRelay]:
    with InProcessRelay(
        tmp_path / "data",
        clock,
        stale_after=STALE_S,
        reap_every=3600.0,
        command_deadline=300.0,
        lost_after=300.0,
        max_reap_min=3,
    ) as r:
        yield r


@pytest.fixture
def client(relay: InProcessRelay) -> Iterator[Client]:
    c = Client(relay.url)
    yield c
    c.close()


def types(client: Client) -> list[str]:
    return [e["type"] for e in full_log(client)]


def spawn_anywhere(client: Client, **body: Any) -> Any:
    return client.post("/api/agents/spawn", {"provider": "claude", **body})


# -- capacity and placement ------------------------------------------------------------


def test_spawn_goes_to_the_least_loaded_matching_host_with_room(client: Client) -> None:
    register_orchestrator(client, "busy", hostname="a", maxAgents=4, labels={"zone": "x"})
    register_orchestrator(client, "idle", hostname="b", maxAgents=4, labels={"zone": "x"})
    register_orchestrator(client, "other", hostname="c", maxAgents=4, labels={"zone": "y"})
    assert client.post("/api/orchestrators/busy/heartbeat", {"load": {"activeAgents": 3}}).status == 200
    assert client.get("/api/orchestrators/busy").json["activeAgents"] == 3
    client.patch("/api/orchestrators/idle/agents", {"agents": [managed("m1")]})
    assert client.get("/api/orchestrators/idle").json["activeAgents"] == 1  # derived from the report

    r = spawn_anywhere(client, selector={"zone": "x"})
    assert r.status == 202, r
    assert r.json["orchestratorId"] == "idle"  # 1 active beats 3; "other" does not match
    assert r.json["command"]["deadlineAt"] == T0 + 300_000


def test_full_hosts_and_missing_providers_are_409_naming_why(client: Client) -> None:
    register_orchestrator(client, "h1", hostname="a", maxAgents=1, providers=["claude"])
    register_orchestrator(client, "h2", hostname="b", maxAgents=1, providers=["claude"])
    r = spawn_anywhere(client, provider="codex")
    assert r.status == 409 and r.json["error"].startswith("no online host offers codex"), r
    assert spawn_anywhere(client).status == 202
    assert spawn_anywhere(client).status == 202  # pending spawns count against the room
    head = client.log_head()
    r = spawn_anywhere(client)
    assert r.status == 409 and r.json["error"].startswith("all 2 matching hosts are full"), r
    r = client.post("/api/orchestrators/h1/spawn", {"provider": "claude"})
    assert r.status == 409 and "is full (1 of 1 agents" in r.json["error"], r
    r = spawn_anywhere(client, selector={"gpu": "a100"})
    assert r.status == 409 and "matches selector gpu=a100" in r.json["error"], r
    assert client.log_head() == head  # refusals append nothing


def test_capacity_is_recorded_only_when_it_changes(client: Client) -> None:
    register_orchestrator(client, "h1", maxAgents=2, labels={"zone": "x"})
    register_orchestrator(client, "h1", maxAgents=2, labels={"zone": "x"})
    register_orchestrator(client, "h1", maxAgents=3, labels={"zone": "x"})
    assert types(client).count("OrchestratorCapacityDeclared") == 2
    o = client.get("/api/orchestrators/h1").json
    assert (o["maxAgents"], o["labels"]) == (3, {"zone": "x"})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"maxAgents": 0}, "maxAgents"),
        ({"maxAgents": True}, "maxAgents"),
        ({"labels": {"zone": 3}}, "labels"),
        ({"labels": ["zone"]}, "labels"),
    ],
)
def test_bad_capacity_is_400_naming_the_field(client: Client, body: dict[str, Any], field: str) -> None:
    r = client.post("/api/orchestrators", {"id": "h1", "hostname": "h", "baseDir": "/srv", **body})
    assert r.status == 400 and r.json["error"].startswith(field), r
    assert client.log_head() == 0


def test_a_heartbeat_with_a_bad_load_is_400(client: Client) -> None:
    register_orchestrator(client, "h1")
    head = client.log_head()
    for load in ({"cpu": 1}, {"activeAgents": -1}, {"activeAgents": 1, "memory": 2}):
        r = client.post("/api/orchestrators/h1/heartbeat", {"load": load})
        assert r.status == 400 and r.json["error"].startswith("load"), r
    assert client.log_head() == head


def test_a_spawn_may_ask_for_a_shorter_deadline_never_a_longer_one(client: Client) -> None:
    register_orchestrator(client, "h1")
    r = client.post("/api/orchestrators/h1/spawn", {"provider": "claude", "deadlineSeconds": 10})
    assert r.json["command"]["deadlineAt"] == T0 + 10_000
    r = client.post("/api/orchestrators/h1/spawn", {"provider": "claude", "deadlineSeconds": 301})
    assert r.json["command"]["deadlineAt"] == T0 + 300_000  # a longer ask gets the relay's most
    r = client.post("/api/orchestrators/h1/spawn", {"provider": "claude", "deadlineSeconds": 0})
    assert r.status == 400 and r.json["error"].startswith("deadlineSeconds"), r


# -- commands always end ------------------------------------------------------------------


def test_a_command_past_its_deadline_expires_and_a_late_result_is_409(
    client: Client, clock: FakeClock
) -> None:
    register_orchestrator(client, "h1")
    cid = client.post("/api/orchestrators/h1/spawn", {"provider": "claude", "deadlineSeconds": 60}).json[
        "command"
    ]["id"]
    started = client.post(f"/api/orchestrators/h1/commands/{cid}/progress", {"status": "running"})
    assert started.status == 200 and started.json["status"] == "running", started
    again = client.post(f"/api/orchestrators/h1/commands/{cid}/progress", {"status": "running"})
    assert again.status == 200 and types(client).count("CommandStarted") == 1  # a retry is not news

    clock.advance(60_000)
    client.post("/api/orchestrators/h1/heartbeat")
    assert client.post("/api/system/reap").json["expiredCommandIds"] == []  # at the deadline: not past
    clock.advance(1)
    client.post("/api/orchestrators/h1/heartbeat")
    r = client.post("/api/system/reap").json
    assert r["expiredCommandIds"] == [cid] and r["reapedOrchestratorIds"] == []
    cmd = client.get("/api/orchestrators/h1/commands?status=expired").json[0]
    assert cmd["expired"] == {"reason": "deadline passed", "at": T0 + 60_001}
    head = client.log_head()
    late = client.post(f"/api/orchestrators/h1/commands/{cid}/result", {"status": "done"})
    assert late.status == 409 and "expired" in late.json["error"], late
    assert client.log_head() == head  # recorded nowhere
    # its control message was settled with it: the host's inbox holds nothing to do
    inbox = client.get("/api/messages?agent=orchestrator-h1&status=pending")
    assert inbox.status == 200 and inbox.json["messages"] == [], inbox


def test_a_host_never_starts_a_command_past_its_deadline(client: Client, clock: FakeClock) -> None:
    register_orchestrator(client, "h1")
    cid = client.post("/api/orchestrators/h1/spawn", {"provider": "claude", "deadlineSeconds": 5}).json[
        "command"
    ]["id"]
    clock.advance(5_001)
    r = client.post(f"/api/orchestrators/h1/commands/{cid}/progress", {"status": "running"})
    assert r.status == 409 and "deadline" in r.json["error"], r


def test_a_host_that_goes_offline_expires_its_pending_commands_and_its_agents_become_unknown_then_lost(
    client: Client, clock: FakeClock
) -> None:
    register_orchestrator(client, "h1")
    register_orchestrator(client, "h2")
    client.patch("/api/orchestrators/h1/agents", {"agents": [managed("m1")]})
    pending = client.post("/api/orchestrators/h1/spawn", {"provider": "claude"}).json["command"]["id"]
    running = client.post("/api/orchestrators/h1/actions", {"action": "restart", "agentId": "m1"}).json[
        "command"
    ]["id"]
    client.post(f"/api/orchestrators/h1/commands/{running}/progress", {"status": "running"})

    clock.advance(int(STALE_S * 1000) + 1)
    client.post("/api/orchestrators/h2/heartbeat")
    r = client.post("/api/system/reap").json
    assert r["reapedOrchestratorIds"] == ["h1"]
    assert r["expiredCommandIds"] == [pending]  # the started one may still finish by its deadline
    cmds = {c["id"]: c for c in client.get("/api/orchestrators/h1/commands").json}
    assert cmds[pending]["expired"]["reason"] == "orchestrator offline"
    assert cmds[running]["status"] == "running"
    assert [m["state"] for m in client.get("/api/managed-agents?state=unknown").json] == ["unknown"]

    clock.advance(300_000)  # exactly lost-after: still unknown
    client.post("/api/orchestrators/h2/heartbeat")
    r = client.post("/api/system/reap").json
    assert r["lostOrchestratorIds"] == []
    assert r["expiredCommandIds"] == [running]  # its deadline (300 s) passed meanwhile
    clock.advance(1)
    client.post("/api/orchestrators/h2/heartbeat")
    r = client.post("/api/system/reap").json
    assert r["lostOrchestratorIds"] == ["h1"]
    assert client.get("/api/managed-agents?state=lost").json[0]["agentId"] == "m1"

    # the host comes back and reports: its agents run again, nothing is respawned
    client.post("/api/orchestrators/h1/heartbeat")
    client.patch("/api/orchestrators/h1/agents", {"agents": [managed("m1")]})
    assert [m["state"] for m in client.get("/api/managed-agents").json] == ["running"]
    assert types(client).count("SpawnRequested") == 1
    bad = client.get("/api/managed-agents?state=gone")
    assert bad.status == 400 and bad.json["error"].startswith("state"), bad


# -- the reaper's brake ---------------------------------------------------------------------


def test_a_mass_outage_suspends_the_reaper_and_resuming_gives_everyone_a_fresh_grace(
    client: Client, clock: FakeClock
) -> None:
    hosts = [f"h{i}" for i in range(10)]
    for h in hosts:
        register_orchestrator(client, h)
    clock.advance(int(STALE_S * 1000) + 1)
    for h in hosts[:3]:
        client.post(f"/api/orchestrators/{h}/heartbeat")
    # 7 of 10 went silent at once (more than half, and more than --max-reap-min 3)
    r = client.post("/api/system/reap").json
    assert r["reapedOrchestratorIds"] == [] and r["suspended"] is True
    health = client.get("/api/health")
    assert health.status == 200 and health.json["status"] == "degraded"
    check = next(ch for ch in health.json["checks"] if ch["name"] == "reaper")
    assert check["status"] == "suspended" and "7 of 10" in check["detail"]
    assert client.post("/api/system/reap").json["reapedOrchestratorIds"] == []  # still held
    assert types(client).count("ReapSuspended") == 1

    # they come back, but one: the next pass is under the threshold and resumes
    clock.advance(1000)
    for h in hosts[:9]:
        client.post(f"/api/orchestrators/{h}/heartbeat")
    r = client.post("/api/system/reap").json
    assert r["reapedOrchestratorIds"] == [] and r["suspended"] is False
    assert "ReapResumed" in types(client)
    resumed_at = clock.now
    # the fresh grace: h9 stays online until stale-after has passed since the resume
    clock.advance(int(STALE_S * 1000))
    for h in hosts[:9]:
        client.post(f"/api/orchestrators/{h}/heartbeat")
    assert client.post("/api/system/reap").json["reapedOrchestratorIds"] == []
    clock.advance(1)
    for h in hosts[:9]:
        client.post(f"/api/orchestrators/{h}/heartbeat")
    assert client.post("/api/system/reap").json["reapedOrchestratorIds"] == ["h9"]
    assert clock.now - resumed_at == STALE_S * 1000 + 1
    assert client.get("/api/health").json["status"] != "degraded"


def test_force_reaps_through_the_brake(client: Client, clock: FakeClock) -> None:
    for i in range(5):
        register_orchestrator(client, f"h{i}")
    clock.advance(int(STALE_S * 1000) + 1)
    assert client.post("/api/system/reap").json["suspended"] is True
    r = client.post("/api/system/reap?force=true").json
    assert sorted(r["reapedOrchestratorIds"]) == [f"h{i}" for i in range(5)]
    bad = client.post("/api/system/reap?force=yes")
    assert bad.status == 400 and bad.json["error"].startswith("force"), bad
