"""kill -9 in the middle of a write storm, 20 times: no acknowledged write is lost.

Concurrent clients register orchestrators and agents, heartbeat, report
managed agents, spawn and record results, while the relay is killed with
SIGKILL at a random moment. After every restart:

- every write that was answered 2xx is in the log (GET /api/log), found by
  what made it unique (a nonce in ``meta`` or a label, a command id) or, for
  heartbeats, by count: the log holds at least as many as were acknowledged;
- the read models the relay loaded (checkpoint plus tail) equal a rebuild from
  position 0 (the same GETs after deleting the checkpoint and restarting);
- ``relay audit verify`` passes.
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

ROUNDS = 20
WORKERS = 4
SEED = 20261125
ARGS = ["--stale-after", "3600", "--checkpoint-every", "40", "--max-streams-per-client", "0"]


class Ledger:
    """What the relay acknowledged, across all rounds (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nonces: dict[str, set[str]] = collections.defaultdict(set)  # event family -> nonces
        self.heartbeats: collections.Counter[tuple[str, str]] = collections.Counter()
        self.commands: set[str] = set()
        self.results: set[str] = set()
        self.acked = 0

    def nonce(self, family: str, value: str) -> None:
        with self.lock:
            self.nonces[family].add(value)
            self.acked += 1

    def heartbeat(self, kind: str, entity: str) -> None:
        with self.lock:
            self.heartbeats[(kind, entity)] += 1
            self.acked += 1

    def command(self, command_id: str) -> None:
        with self.lock:
            self.commands.add(command_id)
            self.acked += 1

    def result(self, command_id: str) -> None:
        with self.lock:
            self.results.add(command_id)
            self.acked += 1


def _storm(url: str, worker: int, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    """One client's mixed writes until the relay dies or ``stop`` is set."""
    rng = random.Random(seed)
    oid = f"crash-o{worker}"
    aid = f"crash-a{worker}"
    pending: list[str] = []
    api = Client(url, timeout=5)
    try:
        while not stop.is_set():
            nonce = uuid.uuid4().hex
            op = rng.choice(
                ["register", "heartbeat", "heartbeat", "report", "spawn", "result", "agent", "agent-hb"]
            )
            if op == "register":
                body = {
                    "id": oid,
                    "hostname": f"h{worker}",
                    "baseDir": f"/srv/{worker}",
                    "meta": {"nonce": nonce},
                }
                if api.post("/api/orchestrators", body).status == 201:
                    ledger.nonce("orchestrator", nonce)
            elif op == "heartbeat":
                if api.post(f"/api/orchestrators/{oid}/heartbeat").status == 200:
                    ledger.heartbeat("orchestrator", oid)
            elif op == "report":
                agents = [{"agentId": f"m{worker}", "provider": "claude", "label": nonce,
                           "tmuxSession": f"relay-m{worker}"}]
                if api.patch(f"/api/orchestrators/{oid}/agents", {"agents": agents}).status == 200:
                    ledger.nonce("report", nonce)
            elif op == "spawn":
                r = api.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude", "label": nonce})
                if r.status == 202:
                    ledger.command(r.json["command"]["id"])
                    pending.append(r.json["command"]["id"])
            elif op == "result" and pending:
                cid = pending.pop(0)
                r = api.post(f"/api/orchestrators/{oid}/commands/{cid}/result", {"status": "done"})
                if r.status == 200:
                    ledger.result(cid)
            elif op == "agent":
                if api.post("/api/agents", {"id": aid, "meta": {"nonce": nonce}}).status == 201:
                    ledger.nonce("agent", nonce)
            elif op == "agent-hb" and api.post(f"/api/agents/{aid}/heartbeat").status == 200:
                ledger.heartbeat("agent", aid)
    except OSError:
        pass  # the relay was killed mid-request: that write was never acknowledged
    finally:
        api.close()


def _read_log(api: Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get(f"/api/log?after={after}&limit=1000").json
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["next"]


def _check_acknowledged(events: list[dict[str, Any]], ledger: Ledger) -> int:
    """Every acknowledged write is in ``events``; returns how many were checked."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    beats: collections.Counter[tuple[str, str]] = collections.Counter()
    commands, results = set(), set()
    for e in events:
        t, d = e["type"], e["data"]
        if t in ("OrchestratorRegistered", "OrchestratorReregistered"):
            found["orchestrator"].add(d["meta"].get("nonce"))
        elif t in ("AgentRegistered", "AgentReregistered"):
            found["agent"].add(d["meta"].get("nonce"))
        elif t == "ManagedAgentsReported":
            found["report"].update(a.get("label") for a in d["agents"])
        elif t == "OrchestratorHeartbeatReceived":
            beats[("orchestrator", e["entityId"])] += 1
        elif t == "AgentHeartbeatReceived":
            beats[("agent", e["entityId"])] += 1
        elif t == "SpawnRequested":
            commands.add(d["commandId"])
        elif t == "CommandResultRecorded":
            results.add(d["commandId"])
    with ledger.lock:
        for family, nonces in ledger.nonces.items():
            missing = nonces - found[family]
            assert not missing, f"{len(missing)} acknowledged {family} writes are not in the log"
        for key, n in ledger.heartbeats.items():
            assert beats[key] >= n, f"{key}: {n} heartbeats acknowledged, {beats[key]} in the log"
        assert not ledger.commands - commands, "acknowledged spawns are missing"
        assert not ledger.results - results, "acknowledged results are missing"
        return ledger.acked


def _read_models(api: Client) -> dict[str, Any]:
    """What the queries answer: enough to compare a checkpoint load with a rebuild."""
    orchestrators = api.get("/api/orchestrators").json
    return {
        "orchestrators": orchestrators,
        "agents": api.get("/api/agents").json,
        "managed": api.get("/api/managed-agents").json,
        "commands": {o["id"]: api.get(f"/api/orchestrators/{o['id']}/commands").json for o in orchestrators},
    }


def _rebuilt(data: Path) -> dict[str, Any]:
    """The same answers from read models folded afresh from position 0 (no checkpoint)."""
    from relay.application import RelayApp
    from relay.config import Settings
    from relay.projections.follower import load_read_models
    from relay.store import store_env

    app = RelayApp(store_env(Settings(data_dir=data)))
    try:
        rm, how = load_read_models(app, None)
    finally:
        app.close()
    assert how == "rebuilt from position 0"
    orchestrators = rm.orchestrators_sorted()
    answers = {
        "orchestrators": orchestrators,
        "agents": rm.agents_sorted(),
        "managed": rm.managed_agents(),
        "commands": {o["id"]: rm.commands_of(o["id"]) for o in orchestrators},
    }
    return json.loads(json.dumps(answers))  # as the wire has it


def _audit_verify(data: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), "verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _fresh_client(relay: RelayProcess) -> Client:
    return Client(relay.url, timeout=30)


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(SEED)
    ledger = Ledger()
    relay = RelayProcess(data, ARGS, store="sqlite").start()
    hows: collections.Counter[str] = collections.Counter()
    kills = 0
    started = time.monotonic()
    try:
        for round_no in range(ROUNDS):
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=_storm, args=(relay.url, w, ledger, stop, rng.randrange(2**32)), daemon=True
                )
                for w in range(WORKERS)
            ]
            before = ledger.acked
            for t in threads:
                t.start()
            # Kill at a random moment once the storm is under way (at least a few acknowledged).
            deadline = time.monotonic() + 10
            while ledger.acked < before + 5 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert ledger.acked >= before + 5, "the storm never got going:\n" + "".join(relay.output[-30:])
            time.sleep(rng.uniform(0.05, 0.6))
            relay.kill()
            kills += 1
            stop.set()
            for t in threads:
                t.join(10)

            relay = RelayProcess(data, ARGS, store="sqlite").start()
            api = _fresh_client(relay)
            try:
                checked = _check_acknowledged(_read_log(api), ledger)
                loaded = _read_models(api)
            finally:
                api.close()
            loaded_how = next(line for line in relay.output if "read models at position" in line)
            hows[loaded_how.split("(")[1].split(" ")[0]] += 1
            # The same questions answered by read models folded afresh from position 0.
            assert loaded == _rebuilt(data), f"round {round_no}: {loaded_how.strip()} differs from a rebuild"
            _audit_verify(data)
    finally:
        relay.stop()
    elapsed = time.monotonic() - started
    print(
        f"\ncrash: {kills} kills survived, {checked} acknowledged writes checked "
        f"(all present after every restart), read models equal a rebuild each round "
        f"(loaded: {dict(hows)}), "
        f"audit verify passed each round; {elapsed:.1f} s"
    )
    assert kills == ROUNDS
