"""Attacks on the host daemon (issue 17), each run for real: tmux, processes, a relay.

Every test here reproduced its attack before the fix it guards: a token on
argv or in an agent's environment, an approval mode that changed nothing, a
prompt read as an option, a cwd swapped for a symlink mid-spawn, a token sent
in clear text to another machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.host.conftest import HostWorld, requires_tmux, wait_for

pytestmark = requires_tmux


def _host(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m relay.host`` with a clean RELAY_* environment, to completion."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "relay.host", *args], capture_output=True, text=True,
        timeout=60, check=False, env={**base, **(env or {})},
    )


def _once_args(tmp_path: Path, relay: str = "http://127.0.0.1:9") -> list[str]:
    (tmp_path / "base").mkdir(exist_ok=True)
    return ["--once", "--relay", relay, "--id", "h1", "--base-dir", str(tmp_path / "base"),
            "--provider", "claude=claude", "--state", str(tmp_path / "s.json")]


def _started(world: HostWorld, command_id: str) -> dict[str, Any]:
    cmd = world.api.settled(world.oid, command_id)
    assert cmd["status"] == "done", (cmd, world.host_log())
    return wait_for(
        lambda: next((s for s in world.starts() if s["commandId"] == command_id), None),
        20, f"the provider of {command_id} to start",
    )


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


# -- 1. the token never on argv, never reaching an agent -------------------------------


def test_a_token_on_the_command_line_is_refused(tmp_path: Path) -> None:
    out = _host(*_once_args(tmp_path), "--token", "s3cret-admin-token")
    assert out.returncode == 2, out
    assert "--token-file" in out.stderr and "/proc/PID/cmdline" in out.stderr
    assert "s3cret-admin-token" not in out.stderr + out.stdout
    assert _host(*_once_args(tmp_path), "--token=s3cret-admin-token").returncode == 2


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-host-token\n")
    token_file.chmod(0o644)
    out = _host(*_once_args(tmp_path), "--token-file", str(token_file))
    assert out.returncode == 2, out
    assert "can be read by other users" in out.stderr and "chmod 600" in out.stderr
    assert "s3cret-host-token" not in out.stderr + out.stdout

    token_file.chmod(0o600)
    out = _host(*_once_args(tmp_path), "--token-file", str(token_file))
    assert out.returncode == 0, out.stderr
    assert "s3cret-host-token" not in out.stdout


@pytest.mark.parametrize("via", ["env", "file", "dirty-server"])
def test_no_relay_token_reaches_the_tmux_server_or_an_agent(
    token_world: HostWorld, via: str
) -> None:
    """``tmux show-environment -g`` and the agent's /proc/PID/environ hold nothing of ours.

    ``dirty-server``: a tmux server already runs on the socket, started by
    someone with the token in their environment; the daemon cleans its
    global environment before any agent starts.
    """
    world = token_world
    token = world.token or ""
    if via == "dirty-server":
        subprocess.run(
            ["tmux", "-L", world.tmux.socket, "new-session", "-d", "-s", "someone", "sleep 600"],
            check=True, env={**os.environ, "RELAY_TOKEN": token, "HOST_MARKER": "x"},
        )
    if via == "file":
        token_file = world.root / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        host = world.start_host(extra=["--token-file", str(token_file)])
    else:
        host = world.start_host()  # RELAY_TOKEN (and HOST_MARKER) in its environment
    assert host.proc is not None
    assert token not in Path(f"/proc/{host.proc.pid}/cmdline").read_text()

    record = _started(world, world.api.spawn(world.oid, provider="claude"))
    shown = subprocess.run(
        ["tmux", "-L", world.tmux.socket, "show-environment", "-g"],
        capture_output=True, text=True, check=True,
    ).stdout
    server_pid = int(subprocess.run(
        ["tmux", "-L", world.tmux.socket, "display-message", "-p", "#{pid}"],
        capture_output=True, text=True, check=True,
    ).stdout)
    places = {
        "tmux show-environment -g": shown,
        "the agent's environ": "\n".join(f"{k}={v}" for k, v in _environ(record["pid"]).items()),
    }
    if via == "dirty-server":
        removed = re.search(r"removed (.*) from its global environment", world.host_log())
        assert removed, world.host_log()
        assert {"HOST_MARKER", "RELAY_TOKEN"} <= set(removed.group(1).split(", "))
        assert token not in world.host_log()  # names only, never values
    else:
        places["the tmux server's environ"] = "\n".join(
            f"{k}={v}" for k, v in _environ(server_pid).items()
        )
    for name, environ in places.items():
        assert "RELAY_TOKEN" not in environ, name
        assert token not in environ, name
        assert "HOST_MARKER" not in environ, name  # a daemon-only variable
    agent_env = _environ(record["pid"])
    assert agent_env["STUB_SECRET"] == "s3cr3t-value"  # the env file still reaches it
    assert agent_env["RELAY_AGENT_ID"] == record["agentId"]
    assert agent_env.get("TERM")  # tmux's, for TUIs


def test_an_env_file_holding_the_hosts_own_token_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / "agents.env"
    env_file.write_text("AGENT_TOKEN=the-host-token\n")
    out = _host(*_once_args(tmp_path), "--env-file", str(env_file),
                env={"RELAY_TOKEN": "the-host-token"})
    assert out.returncode == 2, out
    assert "AGENT_TOKEN" in out.stderr and "own relay token" in out.stderr


# -- 2. approvalMode enforced; a prompt is never an option --------------------------------


def test_each_approval_mode_runs_the_providers_own_flags(world: HostWorld) -> None:
    world.start_host()
    expected = {
        ("claude", "open"): {"permission_mode": "bypassPermissions"},
        ("claude", "guarded"): {"permission_mode": "default"},
        ("claude", "read-only"): {"permission_mode": "plan"},
        ("codex", "open"): {"sandbox": "workspace-write", "ask_for_approval": "never"},
        ("codex", "guarded"): {"sandbox": "read-only", "ask_for_approval": "on-request"},
        ("codex", "read-only"): {"sandbox": "read-only", "ask_for_approval": "never"},
    }
    ids = {
        key: world.api.spawn(world.oid, provider=key[0], approvalMode=key[1], label=key[1])
        for key in expected
    }
    for key, cid in ids.items():
        parsed = _started(world, cid)["parsed"]
        for option, value in expected[key].items():
            assert parsed[option] == value, (key, parsed)
        assert parsed["dangerously_skip_permissions"] is False, (key, parsed)
        assert parsed["unknown"] == [], (key, parsed)


def test_a_mode_the_provider_cannot_honour_fails_saying_why(world: HostWorld) -> None:
    config = world.root / "host.toml"
    config.write_text(
        '[providers.claude.approval]\nopen = false\nguarded = ["--permission-mode", "acceptEdits"]\n'
    )
    world.start_host(extra=["--config", str(config)])
    refused = world.api.spawn(world.oid, provider="claude", approvalMode="open")
    cmd = world.api.settled(world.oid, refused)
    assert cmd["status"] == "failed", cmd
    assert "cannot honour approvalMode 'open'" in cmd["result"]["error"]
    assert "offered: guarded, read-only" in cmd["result"]["error"]
    # The configured flags replace the default ones.
    record = _started(world, world.api.spawn(world.oid, provider="claude"))
    assert record["parsed"]["permission_mode"] == "acceptEdits"
    assert [s["commandId"] for s in world.starts()] == [record["commandId"]]


def test_a_prompt_that_looks_like_an_option_stays_a_prompt(world: HostWorld) -> None:
    world.start_host()
    for provider in ("claude", "codex"):
        prompt = "--dangerously-skip-permissions"
        record = _started(world, world.api.spawn(
            world.oid, provider=provider, approvalMode="guarded", prompt=prompt, label=provider,
        ))
        assert record["parsed"]["dangerously_skip_permissions"] is False
        assert record["parsed"]["prompt"] == prompt
        assert record["argv"][-2:] == ["--", prompt]
        assert record["parsed"]["unknown"] == []


# -- 3. cwd race: a directory swapped for a symlink mid-spawn -----------------------------


def test_entering_the_cwd_refuses_a_symlink_anywhere_on_the_way(tmp_path: Path) -> None:
    from relay.host.launch import EscapedError, enter_inside  # the shim is a plain script

    base = tmp_path / "base"
    (base / "proj" / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    real = str((base / "proj" / "sub").resolve())
    here = os.getcwd()
    try:
        enter_inside(real, str(base.resolve()))
        assert os.getcwd() == real
        os.chdir(here)
        (base / "proj").rename(base / "proj-real")
        (base / "proj").symlink_to(outside)  # the swap after the daemon's check
        with pytest.raises(EscapedError, match="safely at 'proj'"):
            enter_inside(real, str(base.resolve()))
        assert os.getcwd() == here
        with pytest.raises(EscapedError, match="not inside"):
            enter_inside(str(outside.resolve()), str(base.resolve()))
    finally:
        os.chdir(here)


def test_swapping_the_cwd_for_a_symlink_during_spawns_never_starts_an_agent_outside(
    world: HostWorld, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    proj, parked = world.base / "proj", world.base / "proj-parked"
    world.start_host()
    stop = threading.Event()
    swaps = 0

    def racer() -> None:
        # The attacker's rhythm, not synchronisation: half the time a real
        # directory (so the daemon's check passes), half the time a symlink
        # out (so an agent entering the path by name a moment later escapes).
        nonlocal swaps
        while not stop.is_set():
            stop.wait(0.03)
            proj.rename(parked)
            proj.symlink_to(outside)
            stop.wait(0.03)
            proj.unlink()
            parked.rename(proj)
            swaps += 1

    thread = threading.Thread(target=racer, daemon=True)
    thread.start()
    try:
        ids = [world.api.spawn(world.oid, provider="claude", cwd=str(proj), label=f"r{i}")
               for i in range(20)]
        settled = [world.api.settled(world.oid, cid, timeout=60) for cid in ids]
    finally:
        stop.set()
        thread.join(10)
    assert swaps > 0
    base_real = str(world.base.resolve())
    outcomes = {c["id"]: c["status"] for c in settled}
    assert "pending" not in outcomes.values()
    starts = world.starts()
    escaped = [s for s in starts
               if not (s["cwd"] == base_real or s["cwd"].startswith(base_real + "/"))]
    assert escaped == [], (escaped, sorted(outcomes.values()))
    # A refused start is reported with the reason, not as a running agent.
    for command in settled:
        if command["status"] == "failed":
            error = command["result"]["error"]
            assert any(
                why in error for why in ("outside the base dir", "safely", "not an existing")
            ), error


# -- 4. plain http:// to another machine ---------------------------------------------------


def test_plain_http_to_another_machine_is_refused_without_insecure(tmp_path: Path) -> None:
    out = _host(*_once_args(tmp_path, "http://relay.example:4850"))
    assert out.returncode == 2, out
    assert "plain http://" in out.stderr and "--insecure" in out.stderr

    out = _host(*_once_args(tmp_path, "http://relay.example:4850"), "--insecure")
    assert out.returncode == 0, out.stderr
    assert "INSECURE" in out.stderr
    for url in ("http://127.0.0.1:4850", "http://localhost:4850", "http://[::1]:4850",
                "https://relay.example"):
        out = _host(*_once_args(tmp_path, url))
        assert out.returncode == 0, (url, out.stderr)
        assert "INSECURE" not in out.stderr
        assert json.loads(out.stdout)["relay"] == url


# -- control characters in the daemon's log -------------------------------------------------


def test_log_lines_escape_control_characters() -> None:
    import logging

    from relay.host.cli import OneLineFormatter

    record = logging.LogRecord(
        "relay.host", logging.INFO, __file__, 1, "command %s: spawn label=%s",
        ("c1", "evil\n2026-01-01 INFO relay.host: forged\x1b[2J\u2028"), None,
    )
    line = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert line == (
        "INFO command c1: spawn label=evil\\n2026-01-01 INFO relay.host: forged\\x1b[2J\\u2028"
    )
