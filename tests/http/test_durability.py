"""Restarts: the same data folder gives the same log and the same read models,
whether they come from a checkpoint plus tail or from a rebuild at position 0;
and nothing acknowledged is lost to ``kill -9``."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from tests.http.helpers import full_log, managed, register_orchestrator, snapshot
from tests.support.client import Client
from tests.support.server import RelayProcess

CHECKPOINT = "readmodels.json"


def scenario(c: Client) -> None:
    for i in range(6):
        register_orchestrator(c, f"o{i}", hostname=f"h{5 - i}", providers=["claude", "codex"])
        c.post("/api/agents", {"id": f"a{i}", "tags": [f"t{i}"]})
    for i in range(6):
        c.post(f"/api/orchestrators/o{i}/heartbeat")
        c.patch(f"/api/orchestrators/o{i}/agents", {"agents": [managed(f"m{i}"), managed(f"n{i}")]})
        cmd = c.post(f"/api/orchestrators/o{i}/spawn", {"provider": "claude", "cwd": f"p{i}"}).json
        if i % 2:
            c.post(
                f"/api/orchestrators/o{i}/commands/{cmd['command']['id']}/result",
                {"status": "done", "agentId": f"m{i}"},
            )
        c.post(f"/api/orchestrators/o{i}/actions", {"action": "restart", "agentId": f"m{i}"})
    c.delete("/api/orchestrators/o2")
    c.delete("/api/agents/a3")
    register_orchestrator(c, "o2", hostname="again")


def test_restart_gives_identical_log_and_read_models(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RelayProcess(data) as relay:
        c = Client(relay.url)
        scenario(c)
        before, log_before = snapshot(c), full_log(c)
        c.close()
    assert (data / CHECKPOINT).exists(), "a clean stop leaves a checkpoint"
    with RelayProcess(data) as relay:
        c = Client(relay.url)
        assert snapshot(c) == before
        assert full_log(c) == log_before
        c.close()
    (data / CHECKPOINT).unlink()
    with RelayProcess(data) as relay:
        c = Client(relay.url)
        assert snapshot(c) == before, "rebuild from position 0 differs from the live read models"
        c.close()


def test_checkpoint_plus_tail_equals_rebuild(tmp_path: Path) -> None:
    data = tmp_path / "data"
    relay = RelayProcess(data, ["--checkpoint-every", "10"]).start()
    c = Client(relay.url)
    scenario(c)
    live = snapshot(c)
    head = c.log_head()
    c.close()
    relay.kill()  # no shutdown checkpoint: the file on disk is a periodic one, behind the log
    checkpoint_position = __import__("json").loads((data / CHECKPOINT).read_bytes())["position"]
    assert 0 < checkpoint_position < head
    with RelayProcess(data) as relay:
        c = Client(relay.url)
        assert snapshot(c) == live
        c.close()
    (data / CHECKPOINT).unlink()
    with RelayProcess(data) as relay:
        c = Client(relay.url)
        assert snapshot(c) == live
        c.close()


def test_a_checkpoint_from_another_log_is_ignored(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with RelayProcess(a) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "only-in-a")
        c.close()
    with RelayProcess(b) as relay:
        c = Client(relay.url)
        c.post("/api/agents", {"id": "only-in-b"})
        want = snapshot(c)
        c.close()
    (b / CHECKPOINT).write_bytes((a / CHECKPOINT).read_bytes())
    with RelayProcess(b) as relay:
        c = Client(relay.url)
        assert snapshot(c) == want
        c.close()


def test_corrupt_checkpoint_falls_back_to_rebuild(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with RelayProcess(data) as relay:
        c = Client(relay.url)
        scenario(c)
        want = snapshot(c)
        c.close()
    (data / CHECKPOINT).write_bytes(b'{"format": 1, "position": ')
    with RelayProcess(data) as relay:
        c = Client(relay.url)
        assert snapshot(c) == want
        c.close()


def test_kill_9_during_a_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    relay = RelayProcess(data).start()
    setup = Client(relay.url)
    for i in range(4):
        register_orchestrator(setup, f"o{i}")
    setup.close()
    acked: list[tuple[str, str]] = []  # (kind, id) of each 2xx write
    lock = threading.Lock()
    stop = threading.Event()

    def worker(n: int) -> None:
        c = Client(relay.url, timeout=5)
        rng = random.Random(n)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if rng.random() < 0.5:
                    aid = f"w{n}-{i}"
                    r = c.post("/api/agents", {"id": aid})
                    kind = ("AgentRegistered", aid)
                else:
                    oid = f"o{rng.randrange(4)}"
                    r = c.post(f"/api/orchestrators/{oid}/heartbeat")
                    kind = ("OrchestratorHeartbeatReceived", oid)
            except OSError:
                return
            if 200 <= r.status < 300:
                with lock:
                    acked.append(kind)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    # Let writes flow until a good number are acknowledged, then pull the plug.
    deadline = __import__("time").monotonic() + 20
    while len(acked) < 300 and __import__("time").monotonic() < deadline:
        threading.Event().wait(0.01)
    relay.kill()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 300
    with RelayProcess(data) as relay2:
        c = Client(relay2.url)
        log = full_log(c)
        registered = {e["entityId"] for e in log if e["type"] == "AgentRegistered"}
        heartbeats: dict[str, int] = {}
        for e in log:
            if e["type"] == "OrchestratorHeartbeatReceived":
                heartbeats[e["entityId"]] = heartbeats.get(e["entityId"], 0) + 1
        for kind, eid in acked:
            if kind == "AgentRegistered":
                assert eid in registered, f"acknowledged registration of {eid} lost"
        for oid in {eid for k, eid in acked if k == "OrchestratorHeartbeatReceived"}:
            n_acked = sum(1 for k, e in acked if k == "OrchestratorHeartbeatReceived" and e == oid)
            assert heartbeats.get(oid, 0) >= n_acked
        agents = {a["id"] for a in c.get("/api/agents").json}
        assert registered <= agents
        c.close()
