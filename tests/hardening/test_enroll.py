"""Enrollment and the token lifecycle, attacked over a real socket (issue 17, ADR 0013).

Each test plays the attack the issue found: a host holding the admin token could
re-register any orchestrator with ``baseDir: "/"``. Now a host holds only its own
orchestrator token, which can re-register itself inside the baseDir an admin
granted, and nothing else; tokens can be rotated and revoked, as events that hold
hashes only.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.hardening.conftest import ADMIN_TOKEN, Connect, register
from tests.property.logaudit import LogAudit, entry_from_api
from tests.support.client import Client
from tests.support.server import RelayProcess


def enroll(admin: Client, oid: str, base_dir: str | None = None, **extra: Any) -> str:
    """Enroll ``oid`` (base dir /srv/<oid> unless given) over the API; its token."""
    body = {"baseDir": base_dir or f"/srv/{oid}", **extra}
    r = admin.post(f"/api/orchestrators/{oid}/enroll", body)
    assert r.status == 201, r
    token = r.json["orchestratorToken"]
    assert isinstance(token, str) and len(token) >= 32
    return token


def reregistration(oid: str, base_dir: str, **extra: Any) -> dict[str, Any]:
    return {"id": oid, "hostname": f"host-{oid}", "baseDir": base_dir, **extra}


def log_types(admin: Client) -> list[str]:
    page = admin.get("/api/log?limit=1000").json
    return [e["type"] for e in page["events"]]


def test_enrolling_lists_the_host_offline_and_its_token_works_for_it_only(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    token = enroll(admin, "enr-a", hostname="build-a", providers=["codex"])
    o = admin.get("/api/orchestrators/enr-a").json
    assert (o["status"], o["hostname"], o["baseDir"], o["providers"]) == (
        "offline", "build-a", "/srv/enr-a", ["codex"]
    )
    assert "OrchestratorEnrolled" in log_types(admin)
    host = connect(secured.url, token)
    assert host.post("/api/orchestrators/enr-a/heartbeat").status == 200
    assert admin.get("/api/orchestrators/enr-a").json["status"] == "online"
    enroll(admin, "enr-b")
    head = admin.log_head()
    for method, path, body in [
        ("POST", "/api/orchestrators/enr-b/heartbeat", None),
        ("POST", "/api/orchestrators/enr-a/enroll", {"baseDir": "/"}),
        ("POST", "/api/orchestrators/enr-a/token/rotate", None),
        ("POST", "/api/orchestrators/enr-b/token/revoke", None),
        ("GET", "/api/agents", None),
    ]:
        r = host.request(method, path, json=body)
        assert r.status == 403, (method, path, r)
    assert admin.log_head() == head


def test_a_host_token_re_registering_with_base_dir_root_is_403_and_appends_nothing(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    """The attack: a host's token re-registers its orchestrator with baseDir '/'."""
    token = enroll(admin, "wid")
    host = connect(secured.url, token)
    head = admin.log_head()
    for wider in ("/", "/srv", "/srv/wid/..", "/srv/wid/../other", "/srv/wid2", "/srv/wi"):
        r = host.post("/api/orchestrators", reregistration("wid", wider))
        assert r.status == 403, (wider, r)
        assert "baseDir" in r.json["error"] and "/srv/wid" in r.json["error"], r
    assert admin.log_head() == head
    assert admin.get("/api/orchestrators/wid").json["baseDir"] == "/srv/wid"
    # and spawning outside the grant stays impossible
    assert host.post("/api/orchestrators/wid/heartbeat").status == 200
    spawn = admin.post("/api/orchestrators/wid/spawn", {"provider": "claude", "cwd": "/etc"})
    assert spawn.status == 400


def test_a_host_token_re_registers_itself_inside_its_grant_and_keeps_its_token(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    token = enroll(admin, "self-r")
    host = connect(secured.url, token)
    r = host.post(
        "/api/orchestrators",
        reregistration("self-r", "/srv/self-r/sub/", providers=["claude"], meta={"dirs": ["x"]}),
    )
    assert r.status == 201, r
    assert r.json["orchestratorToken"] == token  # the token in the host's file stays valid
    assert (r.json["baseDir"], r.json["status"], r.json["meta"]) == (
        "/srv/self-r/sub", "online", {"dirs": ["x"]}
    )
    # the grant is the admin's, not the last registration's: the host may go back up to it
    r = host.post("/api/orchestrators", reregistration("self-r", "/srv/self-r"))
    assert r.status == 201, r
    assert host.post("/api/orchestrators/self-r/heartbeat").status == 200
    assert "OrchestratorReregisteredByHost" in log_types(admin)


def test_a_host_token_cannot_register_another_orchestrator(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    token = enroll(admin, "mine")
    enroll(admin, "theirs")
    host = connect(secured.url, token)
    head = admin.log_head()
    for oid in ("theirs", "brand-new"):
        r = host.post("/api/orchestrators", reregistration(oid, f"/srv/{oid}"))
        assert r.status == 403, r
        assert "mine" in r.json["error"] and oid in r.json["error"], r
    assert admin.log_head() == head
    assert admin.get("/api/orchestrators/brand-new").status == 404


def test_a_rotated_token_is_refused_at_once_and_the_new_one_works(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    old = enroll(admin, "rot-e")
    r = admin.post("/api/orchestrators/rot-e/token/rotate")
    assert r.status == 200, r
    new = r.json["orchestratorToken"]
    assert new != old and r.json["orchestratorId"] == "rot-e"
    stale = connect(secured.url, old).post("/api/orchestrators/rot-e/heartbeat")
    assert stale.status == 401 and "rotated" in stale.json["error"]
    again = connect(secured.url, old).post("/api/orchestrators", reregistration("rot-e", "/srv/rot-e"))
    assert again.status == 401
    assert connect(secured.url, new).post("/api/orchestrators/rot-e/heartbeat").status == 200
    assert "OrchestratorTokenRotated" in log_types(admin)
    # a legacy host registered with the admin token can be moved to its own token too
    legacy = register(admin, "legacy")
    moved = admin.post("/api/orchestrators/legacy/token/rotate").json["orchestratorToken"]
    assert connect(secured.url, legacy).post("/api/orchestrators/legacy/heartbeat").status == 401
    assert connect(secured.url, moved).post("/api/orchestrators/legacy/heartbeat").status == 200


def test_a_revoked_token_is_refused_until_rotated_or_re_enrolled(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    token = enroll(admin, "rev")
    assert admin.post("/api/orchestrators/rev/token/revoke").status == 200
    for path, body in [
        ("/api/orchestrators/rev/heartbeat", None),
        ("/api/orchestrators", reregistration("rev", "/srv/rev")),
    ]:
        r = connect(secured.url, token).post(path, body)
        assert r.status == 401, (path, r)
        assert "revoked" in r.json["error"]
    head = admin.log_head()
    assert admin.post("/api/orchestrators/rev/token/revoke").status == 200  # idempotent
    assert admin.log_head() == head
    assert log_types(admin).count("OrchestratorTokenRevoked") == 1
    fresh = enroll(admin, "rev", "/srv/rev/narrower")
    assert "OrchestratorReenrolled" in log_types(admin)
    host = connect(secured.url, fresh)
    assert host.post("/api/orchestrators/rev/heartbeat").status == 200
    r = host.post("/api/orchestrators", reregistration("rev", "/srv/rev"))
    assert r.status == 403  # the new grant is narrower: the old baseDir is now wider
    assert admin.post("/api/orchestrators/nobody/token/rotate").status == 404
    assert admin.post("/api/orchestrators/nobody/token/revoke").status == 404


def test_enrollment_refuses_bad_input_and_appends_nothing(
    secured: RelayProcess, admin: Client
) -> None:
    head = admin.log_head()
    for body, field in [
        ({}, "baseDir"),
        ({"baseDir": "relative/dir"}, "baseDir"),
        ({"baseDir": "/srv/x", "providers": ["bash"]}, "providers"),
        ({"baseDir": "/srv/x", "providers": []}, "providers"),
        ({"baseDir": "/srv/x", "hostname": "  "}, "hostname"),
        ({"baseDir": "/srv/\x00x"}, "baseDir"),
    ]:
        r = admin.post("/api/orchestrators/bad-e/enroll", body)
        assert r.status == 400, (body, r)
        assert field in r.json["error"], (body, r)
    assert admin.log_head() == head


def test_enrollment_and_token_events_hold_hashes_only(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    tokens = [enroll(admin, "hush")]
    tokens.append(admin.post("/api/orchestrators/hush/token/rotate").json["orchestratorToken"])
    r = connect(secured.url, tokens[-1]).post("/api/orchestrators", reregistration("hush", "/srv/hush"))
    assert r.status == 201
    admin.post("/api/orchestrators/hush/token/revoke")
    page = admin.get("/api/orchestrators/hush/history").json
    types = [e["type"] for e in page["events"]]
    assert types[:2] == ["OrchestratorEnrolled", "OrchestratorTokenRotated"], types
    assert all("tokenHash" not in e["data"] and "token" not in e["data"] for e in page["events"])
    log = admin.get("/api/log?limit=1000").json
    audit = LogAudit(stale_after_ms=3_600_000)  # the tests' own reading of the log
    audit.feed(entry_from_api(e) for e in log["events"])
    assert not audit.violations, dict(audit.violations)
    whole = str(log)
    stored = b"".join(p.read_bytes() for p in secured.data_dir.iterdir() if p.is_file())
    for token in tokens:
        assert token not in whole
        assert token.encode() not in stored


def test_grants_and_token_states_survive_a_restart(tmp_path: Path, connect: Connect) -> None:
    data = tmp_path / "data"
    args = ["--token", ADMIN_TOKEN]
    with RelayProcess(data, args) as relay:
        admin = connect(relay.url, ADMIN_TOKEN)
        kept = enroll(admin, "kept")
        rotated_away = enroll(admin, "turned")
        rotated = admin.post("/api/orchestrators/turned/token/rotate").json["orchestratorToken"]
        revoked = enroll(admin, "shut")
        admin.post("/api/orchestrators/shut/token/revoke")
    for how in ("checkpoint", "rebuild"):
        if how == "rebuild":
            (data / "readmodels.json").unlink()
        relay = RelayProcess(data, args).start()
        try:
            assert connect(relay.url, kept).post("/api/orchestrators/kept/heartbeat").status == 200
            assert connect(relay.url, rotated).post("/api/orchestrators/turned/heartbeat").status == 200
            assert connect(relay.url, rotated_away).post("/api/orchestrators/turned/heartbeat").status == 401
            assert connect(relay.url, revoked).post("/api/orchestrators/shut/heartbeat").status == 401
            # the grant is the domain's, rebuilt from the log
            wide = connect(relay.url, kept).post("/api/orchestrators", reregistration("kept", "/"))
            assert wide.status == 403, (how, wide)
        finally:
            relay.kill()


# -- the command line ----------------------------------------------------------------


def _relay_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True, text=True, env=clean, timeout=60, check=False,
    )


def test_relay_enroll_writes_a_0600_token_file_and_token_rotate_revoke_work(
    secured: RelayProcess, admin: Client, connect: Connect, tmp_path: Path
) -> None:
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(ADMIN_TOKEN + "\n")
    out = tmp_path / "host.token"
    base = ["--relay", secured.url, "--id", "cli-h", "--token-file", str(admin_file)]
    done = _relay_cli(["enroll", *base, "--base-dir", "/srv/cli-h", "--provider", "claude",
                       "--hostname", "cli-box", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = out.read_text().strip()
    assert token not in done.stdout + done.stderr
    o = admin.get("/api/orchestrators/cli-h").json
    assert (o["hostname"], o["providers"], o["baseDir"]) == ("cli-box", ["claude"], "/srv/cli-h")
    assert connect(secured.url, token).post("/api/orchestrators/cli-h/heartbeat").status == 200

    # rotate: RELAY_TOKEN instead of a file; the new token on stdout, alone
    env = {"RELAY_TOKEN": ADMIN_TOKEN, "RELAY_URL": secured.url}
    rotated = _relay_cli(["token", "rotate", "--id", "cli-h"], env)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert len(new) >= 32 and new != token
    assert connect(secured.url, token).post("/api/orchestrators/cli-h/heartbeat").status == 401
    assert connect(secured.url, new).post("/api/orchestrators/cli-h/heartbeat").status == 200

    revoked = _relay_cli(["token", "revoke", "--id", "cli-h"], env)
    assert revoked.returncode == 0, revoked.stderr
    assert connect(secured.url, new).post("/api/orchestrators/cli-h/heartbeat").status == 401


def test_relay_enroll_says_why_it_failed(secured: RelayProcess, tmp_path: Path) -> None:
    no_admin = _relay_cli(["enroll", "--relay", secured.url, "--id", "x", "--base-dir", "/srv/x"])
    assert no_admin.returncode == 1 and "401" in no_admin.stderr, no_admin.stderr
    wrong = _relay_cli(
        ["enroll", "--relay", secured.url, "--id", "x", "--base-dir", "srv"],
        {"RELAY_TOKEN": ADMIN_TOKEN},
    )
    assert wrong.returncode == 1 and "baseDir" in wrong.stderr, wrong.stderr
    missing = _relay_cli(["token", "rotate", "--relay", secured.url, "--id", "x",
                          "--token-file", str(tmp_path / "absent")])
    assert missing.returncode == 1 and "--token-file" in missing.stderr
    clear = _relay_cli(["enroll", "--relay", "http://relay.invalid:4850", "--id", "x",
                        "--base-dir", "/srv/x"], {"RELAY_TOKEN": ADMIN_TOKEN})
    assert clear.returncode == 1 and "--insecure" in clear.stderr, clear.stderr
    on_argv = _relay_cli(["enroll", "--relay", secured.url, "--id", "x", "--base-dir", "/srv/x",
                          "--token", ADMIN_TOKEN])
    assert on_argv.returncode == 1 and "--token-file" in on_argv.stderr, on_argv.stderr
    assert ADMIN_TOKEN not in on_argv.stderr + on_argv.stdout
