"""The reaper on every node: one reap per stale episode, and a racing heartbeat wins.

Each round, every entity heartbeats (on a random node), goes stale, and then
both nodes reap at once while a random half of the entities heartbeat again
on a random node. Every entity is a race each round: reap against reap, or
reaps against a heartbeat. After each round the log (the same on both nodes)
must show, per entity:

- at most one reap in the round;
- exactly one reap for an entity nobody heartbeated (two reapers, one record);
- no reap after a heartbeat of the round (the heartbeat wins), and the entity
  online on both nodes; offline on both nodes when it was not heartbeated.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from typing import Any

import pytest

from tests.http.helpers import register_agent, register_orchestrator
from tests.postgres.conftest import Connect, NodeFactory
from tests.postgres.support import wait_for
from tests.support.client import Client

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STALE_AFTER = 1.0  # long enough that nothing heartbeated in a round goes stale again within it
AGENTS = 120
ORCHESTRATORS = 30
ROUNDS = int(os.environ.get("RELAY_TEST_RACE_ROUNDS", "12"))
REAPED = {"AgentReaped", "OrchestratorReaped"}
REVIVED = {"AgentHeartbeatReceived", "OrchestratorHeartbeatReceived"}


def log_after(client: Client, after: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = client.get(f"/api/log?after={after}&limit=1000").json
        if not page["events"]:
            return events
        events.extend(page["events"])
        after = page["next"]


def heartbeat_path(kind: str, eid: str) -> str:
    return f"/api/{'agents' if kind == 'agent' else 'orchestrators'}/{eid}/heartbeat"


def status_of(client: Client, kind: str, eid: str) -> str:
    r = client.get(f"/api/{'agents' if kind == 'agent' else 'orchestrators'}/{eid}")
    assert r.status == 200, r
    return str(r.json["status"])


def test_reaps_and_heartbeats_racing_on_two_nodes(node: NodeFactory, connect: Connect) -> None:
    # Reaps only on demand; and every entity here goes silent at once on purpose,
    # which the mass-outage brake (ADR 0019) would hold back: this test is about races.
    args = ["--stale-after", str(STALE_AFTER), "--reap-every", "3600", "--max-reap-fraction", "1"]
    a, b = node("a", args), node("b", args)
    urls = [a.url, b.url]
    ca, cb = connect(a.url), connect(b.url)
    entities = [("agent", f"ag-{i}") for i in range(AGENTS)]
    entities += [("orchestrator", f"or-{i}") for i in range(ORCHESTRATORS)]
    for kind, eid in entities:
        if kind == "agent":
            register_agent(random.choice((ca, cb)), eid)
        else:
            register_orchestrator(random.choice((ca, cb)), eid)
    rng = random.Random(8)
    races = 0
    with contextlib.ExitStack() as stack:
        pool = [[stack.enter_context(contextlib.closing(Client(u))) for u in urls] for _ in range(4)]
        for rnd in range(ROUNDS):
            # 1. everyone fresh, on a random node, so each node's live copies go stale in turn
            for kind, eid in entities:
                assert rng.choice((ca, cb)).post(heartbeat_path(kind, eid)).status == 200
            last_beat = time.monotonic()
            head = max(ca.log_head(), cb.log_head())
            wait_for("both nodes at the head", lambda h=head: min(ca.log_head(), cb.log_head()) >= h)
            # 2. let everyone go stale (time passing is the condition itself)
            time.sleep(max(0.0, last_beat + STALE_AFTER + 0.05 - time.monotonic()))
            # 3. the race: both reapers and half the entities' heartbeats at once
            revived = set(rng.sample(range(len(entities)), len(entities) // 2))
            plan: list[list[tuple[int, int]]] = [[] for _ in pool]
            for n, idx in enumerate(sorted(revived)):
                plan[n % len(pool)].append((idx, rng.randrange(2)))
            start = threading.Barrier(len(pool) + 2)
            errors: list[Any] = []

            def reap(url: str, start: threading.Barrier = start, errors: list[Any] = errors) -> None:
                with contextlib.closing(Client(url)) as client:
                    start.wait()
                    r = client.post("/api/system/reap")
                if r.status != 200:
                    errors.append(r)

            def beat(clients: list[Client], work: list[tuple[int, int]],
                     start: threading.Barrier = start, errors: list[Any] = errors) -> None:
                start.wait()
                for idx, which in work:
                    kind, eid = entities[idx]
                    r = clients[which].post(heartbeat_path(kind, eid))
                    if r.status != 200:
                        errors.append(r)

            round_start = head
            threads = [threading.Thread(target=reap, args=(u,)) for u in urls]
            threads += [threading.Thread(target=beat, args=(pool[k], plan[k])) for k in range(len(pool))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors[:3]
            # 4. both nodes converge on the same log
            head = max(ca.log_head(), cb.log_head())
            wait_for("both nodes converged", lambda h=head: min(ca.log_head(), cb.log_head()) >= h)
            events = log_after(ca, round_start)
            assert events == log_after(cb, round_start)
            # 5. the invariants, per entity
            for idx, (kind, eid) in enumerate(entities):
                mine = [e for e in events if e["entityId"] == eid and e["entityKind"] == kind]
                reaps = [e for e in mine if e["type"] in REAPED]
                beats = [e for e in mine if e["type"] in REVIVED]
                where = f"round {rnd}, {kind} {eid}: {[(e['position'], e['type']) for e in mine]}"
                assert len(reaps) <= 1, "reaped twice in one episode: " + where
                for reap in reaps:
                    for beat in beats:
                        if beat["position"] < reap["position"]:
                            # A reap may follow a heartbeat only if it saw it and it went
                            # stale again (a very slow machine); never over a heartbeat.
                            assert reap["data"]["lastSeen"] >= beat["data"]["at"], "heartbeat lost: " + where
                            assert reap["data"]["at"] - reap["data"]["lastSeen"] > STALE_AFTER * 1000, where
                if idx in revived:
                    assert beats, where
                    late = reaps and beats[-1]["position"] < reaps[0]["position"]
                    expected = "offline" if late else "online"
                else:
                    assert len(reaps) == 1, "stale but not reaped exactly once: " + where
                    expected = "offline"
                for c in (ca, cb):
                    assert status_of(c, kind, eid) == expected, where
                races += 1
    assert races >= ROUNDS * len(entities)
