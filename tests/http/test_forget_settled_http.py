"""After --keep-settled, a settled command and its control message leave the read models
(ADR 0036), a late reference to either is a 404 naming it that appends nothing, and
history still holds every event of both."""

from __future__ import annotations

from pathlib import Path

from relay.clock import FakeClock
from tests.http.helpers import full_log
from tests.property.inprocess import InProcessRelay
from tests.support.client import Client


def test_a_forgotten_command_is_history_only(tmp_path: Path) -> None:
    clock = FakeClock()
    with InProcessRelay(tmp_path / "data", clock, keep_settled="1h", stale_after=86_400.0) as relay:
        api = Client(relay.url)
        assert api.post("/api/orchestrators", {"id": "h0", "hostname": "h", "baseDir": "/srv"}).status == 201
        cid = api.post("/api/orchestrators/h0/spawn", {"provider": "claude"}).json["command"]["id"]
        kept = api.post("/api/orchestrators/h0/spawn", {"provider": "claude"}).json["command"]["id"]
        base = f"/api/orchestrators/h0/commands/{cid}"
        assert api.post(base + "/result", {"status": "done"}).status == 200
        clock.advance(3_600_000 - 1)
        assert api.post("/api/system/reap").status == 200
        assert cid in {c["id"] for c in api.get("/api/orchestrators/h0/commands").json}  # not yet
        clock.advance(1)
        assert api.post("/api/system/reap").status == 200

        assert {c["id"] for c in api.get("/api/orchestrators/h0/commands").json} == {kept}
        assert api.get(f"/api/messages/{cid}").status == 404
        assert api.get(f"/api/messages/{kept}").status == 200
        for call in (
            lambda: api.post(base + "/result", {"status": "done"}),
            lambda: api.post(base + "/progress", {"status": "running"}),
            lambda: api.post(f"/api/messages/{cid}/ack", {"agentId": "orchestrator:h0"}),
            lambda: api.delete(f"/api/messages/{cid}"),
        ):
            head = api.log_head()
            r = call()
            assert r.status == 404, r
            assert cid in r.json["error"] and "forgotten" in r.json["error"], r.json
            assert api.log_head() == head

        history = [e["type"] for e in api.get("/api/orchestrators/h0/history").json["events"]]
        assert history.count("SpawnRequested") == 2
        assert "CommandResultRecorded" in history and "SettledCommandsForgotten" in history
        mine = [e["type"] for e in full_log(api) if e["entityId"] == cid]
        assert mine == ["MessageSent", "MessageAcked", "MessageForgotten"]
        api.close()
