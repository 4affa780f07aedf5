"""Operations: ``GET /metrics`` (Prometheus text), JSON logs, health's lag and store checks.

Run on SQLite by default and on PostgreSQL with ``RELAY_TEST_STORE=postgres``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.http.helpers import register_agent, register_orchestrator
from tests.postgres.support import SseStream, wait_for
from tests.support.client import Client
from tests.support.server import RelayProcess


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics`` by (name, sorted labels)."""
    r = client.get("/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def stale_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path / "d", ["--stale-after", "0.05", "--reap-every", "3600"]) as relay:
        yield relay


def test_metrics_count_events_writes_requests_reaps_and_lag(stale_relay: RelayProcess) -> None:
    with contextlib.closing(Client(stale_relay.url)) as c:
        before = scrape(c)
        register_agent(c, "a1")
        for _ in range(5):
            assert c.post("/api/agents/a1/heartbeat").status == 200
        assert c.post("/api/agents/nobody/heartbeat").status == 404
        assert c.get("/no/such/path").status == 404
        time.sleep(0.1)  # a1 goes stale: time passing is the condition
        assert c.post("/api/system/reap").json["reapedAgentIds"] == ["a1"]
        m = scrape(c)
    appended = "relay_events_appended_total"
    assert sample(m, appended, type="AgentRegistered") == 1
    assert sample(m, appended, type="AgentHeartbeatReceived") == 5
    assert sample(m, appended, type="AgentReaped") == 1
    assert sample(m, "relay_reaps_total", kind="agent") == 1
    requests = "relay_http_requests_total"
    hb = {"route": "/api/agents/{id}/heartbeat", "method": "POST"}
    assert sample(m, requests, **hb, status="200") == 5
    assert sample(m, requests, **hb, status="404") == 1
    assert sample(m, requests, route="unmatched", method="GET", status="404") == 1
    # /metrics itself was scraped once before this scrape began.
    assert sample(m, requests, route="/metrics", method="GET", status="200") >= 1
    assert sample(m, "relay_write_seconds_count", command="HeartbeatAgent") == 6  # 5 + the 404
    assert sample(m, "relay_commit_seconds_count") >= 3
    assert sample(m, "relay_commits_total") >= 3
    assert sample(m, "relay_http_request_seconds_count", route="/api/agents/{id}/heartbeat") == 6
    assert sample(m, "relay_read_model_lag_events") == 0
    assert sample(m, "relay_read_model_position") == sample(m, "relay_log_head_position") >= 7
    assert sample(m, "relay_store_up") == 1
    assert sample(before, appended, type="AgentRegistered") == 0


def test_metrics_gauge_open_sse_streams(relay: RelayProcess, client: Client) -> None:
    def subscribers() -> float:
        return sample(scrape(client), "relay_sse_subscribers")

    assert subscribers() == 0
    register_orchestrator(client, "o1")
    with SseStream(relay.url, "since=0") as a, SseStream(relay.url, "since=0") as b:
        a.next_event()
        b.next_event()
        assert subscribers() == 2
    wait_for("closed streams leave the gauge", lambda: subscribers() == 0)


def test_json_logs_are_one_object_a_line(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "d", ["--log-format", "json"]).start()
    with contextlib.closing(Client(relay.url)) as c:
        register_agent(c, "a1")
    relay.stop()
    objects = [orjson.loads(line) for line in relay.output if line.startswith("{")]
    started = [o for o in objects if o["logger"] == "relay.service" and "read models at" in o["msg"]]
    assert started, relay.output
    assert started[0]["level"] == "INFO" and started[0]["ts"].endswith("+00:00")
    # Only the banner lines are not JSON.
    others = [line for line in relay.output if not line.startswith("{")]
    assert all(line.startswith("relay ") for line in others), others


def test_health_reports_store_and_lag(client: Client) -> None:
    register_agent(client, "a1")
    checks = {c["name"]: c for c in client.get("/api/health").json["checks"]}
    assert checks["store"]["status"] == "ok"
    assert checks["readModels"]["lag"] == 0
    assert checks["readModels"]["position"] == client.log_head() >= 1


def test_an_unreachable_postgres_at_start_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--data", str(tmp_path), "--store", "postgres",
         "--postgres-dsn", "postgresql://nobody:secret@127.0.0.1:1/relay"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1
    assert "cannot open the event store" in r.stderr and "127.0.0.1:1/relay is unreachable" in r.stderr
    assert "Traceback" not in r.stderr and "secret" not in r.stderr
