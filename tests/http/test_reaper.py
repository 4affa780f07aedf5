"""The reaper over a real server: on its schedule, on demand, and with grace after a restart."""

from __future__ import annotations

import time
from pathlib import Path

from tests.http.helpers import managed, register_agent, register_orchestrator
from tests.support.client import Client
from tests.support.server import RelayProcess


def wait_for(predicate, deadline_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_scheduled_reaper_marks_silent_entities_offline(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "d", ["--stale-after", "0.3", "--reap-every", "0.1"]) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "o1")
        c.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1")]})
        register_agent(c, "a1")
        assert wait_for(lambda: c.get("/api/orchestrators/o1").json["status"] == "offline")
        assert wait_for(lambda: c.get("/api/agents/a1").json["status"] == "offline")
        # the orchestrator's agent record follows it; managed agents are untouched
        assert c.get("/api/agents/orchestrator-o1").json["status"] == "offline"
        assert [m["agentId"] for m in c.get("/api/managed-agents").json] == ["m1"]
        assert c.get("/api/managed-agents").json[0]["orchestratorStatus"] == "offline"
        types = [e["type"] for e in c.get("/api/log?limit=1000").json["events"]]
        assert types.count("OrchestratorReaped") == 1 and types.count("AgentReaped") == 1
        # a heartbeat brings it back; the log keeps both facts
        c.post("/api/orchestrators/o1/heartbeat")
        c.post("/api/agents/a1/heartbeat")
        assert c.get("/api/orchestrators/o1").json["status"] == "online"
        assert c.get("/api/agents/a1").json["status"] == "online"
        c.close()


def test_reap_on_demand_reports_ids_and_is_idempotent(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "d", ["--stale-after", "0.2", "--reap-every", "3600"]) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "o1")
        register_agent(c, "a1")
        reaped_agents: set[str] = set()
        reaped_orchs: set[str] = set()

        def reap() -> bool:
            r = c.post("/api/system/reap").json
            assert r["ok"] is True and isinstance(r["releasedMessageIds"], list)
            reaped_agents.update(r["reapedAgentIds"])
            reaped_orchs.update(r["reapedOrchestratorIds"])
            return reaped_agents == {"a1"} and reaped_orchs == {"o1"}

        assert wait_for(reap)
        head = c.log_head()
        again = c.post("/api/system/reap").json
        assert again["reapedAgentIds"] == [] and again["reapedOrchestratorIds"] == []
        assert c.log_head() == head
        c.close()


def test_restart_gives_every_entity_a_full_stale_after_of_grace(tmp_path: Path) -> None:
    data = tmp_path / "d"
    args = ["--stale-after", "1.5", "--reap-every", "3600"]
    with RelayProcess(data, args) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "o1")
        register_agent(c, "a1")
        last_seen = c.get("/api/agents/a1").json["lastSeen"]
        c.close()
    # The relay is down for longer than stale-after.
    assert wait_for(lambda: time.time() * 1000 - last_seen > 2_000)
    with RelayProcess(data, args) as relay:
        c = Client(relay.url)
        r = c.post("/api/system/reap").json
        assert r["reapedAgentIds"] == [] and r["reapedOrchestratorIds"] == []
        # ...but a full stale-after after the start, silence counts again.
        assert wait_for(lambda: "a1" in c.post("/api/system/reap").json["reapedAgentIds"], 10)
        c.close()
