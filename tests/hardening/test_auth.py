"""The admin token and per-orchestrator tokens, over a real socket (contract: Auth)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.hardening.conftest import ADMIN_TOKEN, Connect, register
from tests.support.client import Client
from tests.support.server import RelayProcess


def _operations(admin: Client) -> list[tuple[str, str]]:
    """Every (method, concrete path) the served OpenAPI document lists."""
    doc = admin.get("/api/openapi.json").json
    ops = []
    for path, item in doc["paths"].items():
        concrete = path.replace("{id}", "some-id").replace("{commandId}", "some-command")
        for method in item:
            if method in ("get", "post", "patch", "delete", "put"):
                ops.append((method.upper(), concrete))
    assert len(ops) >= 18, ops
    return ops


def test_every_api_operation_but_health_needs_the_token(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    anonymous = connect(secured.url, None)
    wrong = connect(secured.url, ADMIN_TOKEN + "x")
    head = admin.log_head()
    for method, path in _operations(admin):
        for who in (anonymous, wrong):
            r = who.request(method, path, json={} if method in ("POST", "PATCH") else None)
            if path == "/api/health":
                assert r.status == 200, (method, path, r)
                continue
            assert r.status == 401, (method, path, r)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "token" in r.json["error"]
    # unknown endpoints do not tell an anonymous caller what exists
    assert anonymous.get("/api/no-such-thing").status == 401
    assert admin.get("/api/no-such-thing").status == 404
    assert admin.log_head() == head


def test_the_admin_token_works_in_either_header(secured: RelayProcess, connect: Connect) -> None:
    bearer = connect(secured.url).get("/api/agents", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    header = connect(secured.url).get("/api/agents", headers={"X-Agent-Relay-Token": ADMIN_TOKEN})
    lower_scheme = connect(secured.url).get("/api/agents", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert (bearer.status, header.status, lower_scheme.status) == (200, 200, 200)


def test_query_token_is_only_for_the_event_stream(secured: RelayProcess, connect: Connect) -> None:
    r = connect(secured.url).get(f"/api/agents?token={ADMIN_TOKEN}")
    assert r.status == 401
    assert "only on GET /api/events" in r.json["error"]


def test_odd_tokens_are_refused_not_crashed_on(secured: RelayProcess, connect: Connect) -> None:
    odd = ["é", "\u2603" * 300, "a" * 8000, " ", "Bearer", "null", "\x7f"]
    for token in odd:
        raw = token.encode("utf-8").decode("latin-1")  # what a client puts on the wire
        r = connect(secured.url).get("/api/agents", headers={"X-Agent-Relay-Token": raw})
        assert r.status in (400, 401), (token[:20], r)
    r = connect(secured.url).get("/api/agents", headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert r.status == 401


def test_pages_and_health_stay_open(secured: RelayProcess, connect: Connect) -> None:
    anonymous = connect(secured.url)
    assert anonymous.get("/").status == 200
    assert anonymous.get("/api/health").json["status"] in ("ok", "warn")
    static = Path(__file__).parents[2] / "relay" / "http" / "static"
    for name in ("app.js", "app.css"):
        if (static / name).exists():
            assert anonymous.get(f"/static/{name}").status == 200


def test_an_orchestrator_token_works_only_on_its_own_resources(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    token = register(admin, "own-a")
    register(admin, "own-b")
    mine = connect(secured.url, token)
    assert mine.post("/api/orchestrators/own-a/heartbeat").status == 200
    agents = {"agents": [{"agentId": "w1", "provider": "claude", "tmuxSession": "s", "cwd": "/srv/own-a"}]}
    r = mine.patch("/api/orchestrators/own-a/agents", agents)
    assert r.status == 200 and r.json["managedAgents"][0]["agentId"] == "w1"
    spawn = admin.post("/api/orchestrators/own-a/spawn", {"provider": "claude"})
    assert spawn.status == 202
    command = spawn.json["command"]
    assert command["requestedBy"] == "operator"
    pending = mine.get("/api/orchestrators/own-a/commands?status=pending")
    assert [c["id"] for c in pending.json] == [command["id"]]
    done = mine.post(f"/api/orchestrators/own-a/commands/{command['id']}/result", {"status": "done"})
    assert done.status == 200 and done.json["status"] == "done"

    head = admin.log_head()
    elsewhere: list[tuple[str, str, Any]] = [
        ("POST", "/api/orchestrators/own-b/heartbeat", None),
        ("PATCH", "/api/orchestrators/own-b/agents", {"agents": []}),
        ("GET", "/api/orchestrators/own-b/commands", None),
        ("GET", "/api/orchestrators/own-a", None),
        ("GET", "/api/orchestrators", None),
        ("GET", "/api/agents", None),
        ("GET", "/api/log", None),
        ("GET", "/api/openapi.json", None),
        ("POST", "/api/orchestrators", {"id": "own-a", "hostname": "h", "baseDir": "/srv"}),
        ("POST", "/api/orchestrators/own-a/spawn", {"provider": "claude"}),
        ("POST", "/api/orchestrators/own-a/actions", {"action": "restart"}),
        ("POST", "/api/agents/spawn", {"provider": "claude"}),
        ("POST", "/api/agents/orchestrator-own-a/heartbeat", None),
        ("DELETE", "/api/orchestrators/own-a", None),
        ("POST", "/api/system/reap", None),
    ]
    for method, path, body in elsewhere:
        r = mine.request(method, path, json=body)
        assert r.status == 403, (method, path, r)
        assert "own-a" in r.json["error"], r
    assert admin.log_head() == head


def test_registering_again_rotates_the_token(secured: RelayProcess, admin: Client, connect: Connect) -> None:
    old = register(admin, "rot")
    new = register(admin, "rot")
    assert old != new
    assert connect(secured.url, old).post("/api/orchestrators/rot/heartbeat").status == 401
    assert connect(secured.url, new).post("/api/orchestrators/rot/heartbeat").status == 200


def test_removal_revokes_the_token(secured: RelayProcess, admin: Client, connect: Connect) -> None:
    token = register(admin, "gone")
    assert admin.delete("/api/orchestrators/gone").status == 200
    r = connect(secured.url, token).post("/api/orchestrators/gone/heartbeat")
    assert r.status == 401


def test_tokens_are_never_stored_or_shown(secured: RelayProcess, admin: Client) -> None:
    token = register(admin, "secret-keeper")
    page = admin.get("/api/log?limit=1000").json
    assert token not in str(page)
    assert all("tokenHash" not in e["data"] for e in page["events"])
    listed = admin.get("/api/orchestrators/secret-keeper").json
    assert "orchestratorToken" not in listed
    stored = b"".join(p.read_bytes() for p in secured.data_dir.iterdir() if p.is_file())
    assert token.encode() not in stored
    assert ADMIN_TOKEN.encode() not in stored


def test_tokens_survive_a_restart_from_checkpoint_and_from_a_rebuild(
    tmp_path: Path, connect: Connect
) -> None:
    data = tmp_path / "data"
    args = ["--token", ADMIN_TOKEN]
    with RelayProcess(data, args) as relay:
        admin = connect(relay.url, ADMIN_TOKEN)
        token = register(admin, "survivor")
        rotated_away = register(admin, "rotated")
        rotated = register(admin, "rotated")
    assert (data / "readmodels.json").exists()  # a clean stop leaves a checkpoint
    for how in ("checkpoint", "rebuild"):
        if how == "rebuild":
            (data / "readmodels.json").unlink()
        relay = RelayProcess(data, args).start()
        try:
            health = connect(relay.url).get("/api/health").json
            assert health["status"] in ("ok", "warn")
            assert connect(relay.url, token).post("/api/orchestrators/survivor/heartbeat").status == 200
            assert connect(relay.url, rotated).post("/api/orchestrators/rotated/heartbeat").status == 200
            stale = connect(relay.url, rotated_away).post("/api/orchestrators/rotated/heartbeat")
            assert stale.status == 401
        finally:
            relay.kill()  # no shutdown checkpoint: the next round must load what this one found


def test_without_an_admin_token_presented_tokens_are_still_checked(
    relay: RelayProcess, connect: Connect
) -> None:
    anonymous = connect(relay.url)
    token = register(anonymous, "open-a")
    register(anonymous, "open-b")
    assert anonymous.get("/api/agents").status == 200
    mine = connect(relay.url, token)
    assert mine.post("/api/orchestrators/open-a/heartbeat").status == 200
    assert mine.post("/api/orchestrators/open-b/heartbeat").status == 403
    assert mine.get("/api/agents").status == 403
    assert connect(relay.url, "made-up").get("/api/agents").status == 401


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "0.0.0.0"], {}),
        (["--host", "::"], {}),
        ([], {"RELAY_HOST": "0.0.0.0"}),
        (["--host", "0.0.0.0", "--token", ""], {}),
    ],
)
def test_serve_refuses_a_non_loopback_host_without_a_token(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--data", str(tmp_path / "d"), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "refusing to listen" in proc.stderr and "--token" in proc.stderr
    assert "listening" not in proc.stdout
    assert not (tmp_path / "d").exists()


def _stream_status(url: str, target: str, headers: dict[str, str] | None = None) -> int:
    """The status of GET ``target`` on the event stream (read the head, then hang up)."""
    parts = urlsplit(url)
    lines = [f"GET {target} HTTP/1.1", "Host: localhost", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_the_event_stream_takes_the_query_token_and_scoped_orchestrator_tokens(
    secured: RelayProcess, admin: Client
) -> None:
    token = register(admin, "streamer")
    register(admin, "other-streamer")
    url = secured.url
    assert _stream_status(url, "/api/events") == 401
    assert _stream_status(url, f"/api/events?token={ADMIN_TOKEN}") == 200
    assert _stream_status(url, "/api/events?token=wrong") == 401
    assert _stream_status(url, "/api/events", {"Authorization": f"Bearer {ADMIN_TOKEN}"}) == 200
    own = {"Authorization": f"Bearer {token}"}
    assert _stream_status(url, "/api/events?orchestrator=streamer", own) == 200
    assert _stream_status(url, f"/api/events?orchestrator=streamer&token={token}") == 200
    assert _stream_status(url, "/api/events?orchestrator=other-streamer", own) == 403
    assert _stream_status(url, "/api/events", own) == 403
    assert _stream_status(url, "/api/events?types=agent", own) == 403
