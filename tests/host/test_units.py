"""The daemon's pure parts: options, env file, path checks, listing, state file, SSE."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.host.client import SseParser
from relay.host.config import (
    HostConfigError,
    list_dirs,
    parse_env_text,
    parse_providers,
    resolve_inside,
)
from relay.host.state import HostState, ManagedAgent, StateFile
from relay.host.tmux import Tmux, session_name
from tests.host.conftest import requires_tmux, wait_for


def test_providers_are_split_like_a_shell_but_never_run_by_one() -> None:
    providers = parse_providers(["claude=claude --model 'opus 4'", "codex=codex"])
    assert {n: p.argv for n, p in providers.items()} == {
        "claude": ("claude", "--model", "opus 4"), "codex": ("codex",),
    }


@pytest.mark.parametrize(
    "specs, needle",
    [
        ([], "at least one"),
        (["claude"], "NAME=COMMAND"),
        (["gemini=gemini"], "unknown provider"),
        (["claude="], "empty"),
        (["claude=a", "claude=b"], "twice"),
        (["claude='unterminated"], "cannot split"),
    ],
)
def test_bad_providers_say_what_is_wrong(specs: list[str], needle: str) -> None:
    with pytest.raises(HostConfigError, match=needle):
        parse_providers(specs)


def test_env_file_parsing() -> None:
    text = "# comment\n\nexport A=1\nB = 'two words'\nC=\"x=y\"\nD=\n"
    assert parse_env_text(text) == {"A": "1", "B": "two words", "C": "x=y", "D": ""}
    with pytest.raises(HostConfigError, match="line 1"):
        parse_env_text("not a pair")
    with pytest.raises(HostConfigError, match="line 2"):
        parse_env_text("A=1\n1BAD=2")


def test_cwd_must_resolve_inside_the_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "a"
    (base / "proj").mkdir(parents=True)
    (tmp_path / "a2").mkdir()
    (base / "escape").symlink_to(tmp_path / "a2")
    (base / "inner").symlink_to(base / "proj")
    assert resolve_inside(base, None) == base.resolve()
    assert resolve_inside(base, str(base / "proj")) == (base / "proj").resolve()
    assert resolve_inside(base, "proj") == (base / "proj").resolve()
    assert resolve_inside(base, str(base / "inner")) == (base / "proj").resolve()
    for outside in (str(base / "escape"), str(tmp_path / "a2"), str(base / ".." / "a2")):
        with pytest.raises(HostConfigError, match="outside the base dir"):
            resolve_inside(base, outside)
    with pytest.raises(HostConfigError, match="not an existing directory"):
        resolve_inside(base, str(base / "missing"))


def test_dir_listing_is_two_levels_relative_sorted_and_capped(tmp_path: Path) -> None:
    for rel in ("b/x/deep", "a/y", "a/x", ".hidden/z", "c"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "file.txt").write_text("not a dir")
    dirs, truncated = list_dirs(tmp_path)
    assert dirs == ["a", "a/x", "a/y", "b", "b/x", "c"]
    assert truncated is False
    assert list_dirs(tmp_path, limit=3) == (["a", "a/x", "a/y"], True)


def test_state_file_round_trip_is_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "host.json"
    store = StateFile(path)
    assert store.load() == HostState()
    state = HostState(orchestrator_id="h", orchestrator_token="tok", last_event_id="42")
    state.mark_started({"id": "c1", "kind": "spawn"})
    state.agents.append(ManagedAgent("a1", "claude", "relay-a1", "/srv", "guarded", 1, pid=7))
    store.save(state)
    assert store.load() == state
    assert (path.stat().st_mode & 0o777) == 0o600
    state.finish("c1", {"status": "done", "agentId": "a1"})
    store.save(state)
    loaded = store.load()
    assert loaded.is_handled("c1") and loaded.outbox == {"c1": {"status": "done", "agentId": "a1"}}
    assert sorted(os.listdir(path.parent)) == ["host.json"]  # no temp files left behind


def test_a_damaged_state_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text("{not json")
    with pytest.raises(Exception, match="damaged"):
        StateFile(path).load()
    assert path.read_text() == "{not json"


def test_managed_agent_wire_shape() -> None:
    agent = ManagedAgent("a1", "codex", "relay-x-1", "/srv/p", "open", 5, label="x", pid=9)
    assert agent.to_wire() == {
        "agentId": "a1", "provider": "codex", "tmuxSession": "relay-x-1", "cwd": "/srv/p",
        "approvalMode": "open", "startedAt": 5, "label": "x", "pid": 9,
    }
    assert "pid" not in ManagedAgent("a", "codex", "s", "/", "open", 5).to_wire()


def test_session_names_are_tmux_safe() -> None:
    assert session_name("my.label: x", "claude", "1234abcd-ffff") == "relay-my-label-x-1234abcd"
    assert session_name(None, "codex", "c-1") == "relay-codex-c-1"
    assert session_name("...", "codex", "c1") == "relay-codex-c1"


def test_sse_parser_follows_the_event_stream_rules() -> None:
    parser = SseParser()
    lines = [": keep-alive", "retry: 1000", "id: 7", "event: orchestrator.command",
             'data: {"id":', 'data: "c1"}', "", "", "data: plain", ""]
    events = [e for e in (parser.feed_line(line) for line in lines) if e is not None]
    assert [(e.id, e.event) for e in events] == [("7", "orchestrator.command"), ("7", "message")]
    assert events[0].json() == {"id": "c1"} and events[1].json() is None


def test_dry_run_prints_names_not_values(tmp_path: Path) -> None:
    (tmp_path / "base" / "proj").mkdir(parents=True)
    env_file = tmp_path / "agents.env"
    env_file.write_text("API_KEY=very-secret\n")
    out = subprocess.run(
        [sys.executable, "-m", "relay.host", "--once", "--relay", "http://127.0.0.1:9",
         "--id", "h1", "--base-dir", str(tmp_path / "base"), "--env-file", str(env_file),
         "--provider", "claude=claude --verbose", "--state", str(tmp_path / "s.json")],
        capture_output=True, text=True, check=True, timeout=30,
    )
    assert "very-secret" not in out.stdout
    plan = json.loads(out.stdout)
    assert plan["register"]["envKeys"] == ["API_KEY"]
    assert plan["register"]["providers"] == ["claude"]
    assert plan["register"]["meta"]["dirs"] == ["proj"]
    assert plan["providers"]["claude"]["argv"] == ["claude", "--verbose"]
    assert plan["providers"]["claude"]["approval"]["read-only"] == ["--permission-mode", "plan"]
    assert not (tmp_path / "s.json").exists()


def test_bad_options_exit_2_with_a_reason(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relay.host", "--relay", "http://127.0.0.1:9", "--id", "h1",
         "--base-dir", str(tmp_path / "missing"), "--provider", "claude=claude"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert out.returncode == 2
    assert "is not an existing directory" in out.stderr


@requires_tmux
def test_tmux_runner_starts_without_a_shell(tmp_path: Path) -> None:
    """A single-word command and shell metacharacters reach the program untouched."""
    tmux = Tmux(f"relay-unit-{os.getpid()}")
    out = tmp_path / "argv.json"
    script = tmp_path / "record.py"
    script.write_text(
        "import json, os, sys, time\n"
        f"open({str(out)!r}, 'w').write(json.dumps([sys.argv[1:], os.getcwd(), "
        "os.environ.get('SECRET')]))\n"
        "time.sleep(60)\n"
    )

    async def scenario() -> None:
        try:
            pid = await tmux.start(
                "relay-unit", tmp_path, [sys.executable, str(script), "$(touch pwned); x"],
                {"SECRET": "v"}, tmp_path / "spec",
            )
            assert pid is not None
            assert await tmux.has_session("relay-unit")
            assert await tmux.pane_pid("relay-unit") == pid
            wait_for(out.exists, 20, "the program to record its argv")
            assert json.loads(out.read_text()) == [["$(touch pwned); x"], str(tmp_path), "v"]
            assert not (tmp_path / "pwned").exists()
            assert os.listdir(tmp_path / "spec") == []  # the spec file with values is gone
            assert await tmux.kill("relay-unit") is True
            assert await tmux.kill("relay-unit") is False
            assert await tmux.sessions() == set()
        finally:
            await tmux.kill_server()

    asyncio.run(scenario())


def test_host_config_sets_approval_flags_and_pass_env(tmp_path: Path) -> None:
    from relay.host.config import read_config_file

    path = tmp_path / "host.toml"
    path.write_text(
        '[providers.codex]\ncommand = ["codex", "--model", "o4"]\npass_env = ["OPENAI_API_KEY"]\n'
        '[providers.codex.approval]\nopen = false\n'
    )
    providers = parse_providers([], read_config_file(path))
    codex = providers["codex"]
    assert codex.argv == ("codex", "--model", "o4")
    assert codex.pass_env == ("OPENAI_API_KEY",)
    assert codex.mode_flags("codex", "read-only") == (
        "--sandbox", "read-only", "--ask-for-approval", "never",
    )
    with pytest.raises(HostConfigError, match=r"cannot honour approvalMode 'open'"):
        codex.mode_flags("codex", "open")
    # --provider gives the command; the file still gives the rest.
    both = parse_providers(["codex=/opt/codex"], read_config_file(path))["codex"]
    assert both.argv == ("/opt/codex",) and both.approval["open"] is None


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[providers.codex]\ncommand = 'codex'\nflavour = 1\n", "unknown key"),
        ("[providers.codex]\ncommand = 'codex'\n[providers.codex.approval]\nyolo = []\n",
         "unknown mode 'yolo'"),
        ("[providers.codex]\ncommand = 'codex'\n[providers.codex.approval]\nopen = true\n",
         "list of flags or false"),
        ("[providers.codex]\ncommand = 'codex'\npass_env = ['RELAY_TOKEN']\n", "RELAY_TOKEN"),
        ("[providers.gemini]\ncommand = 'gemini'\n", "unknown provider"),
        ("[providers.codex]\n", "command must be"),
        ("[agents]\n", "unknown table"),
        ("not toml [", "--config"),
    ],
)
def test_bad_host_config_says_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    from relay.host.config import read_config_file

    path = tmp_path / "host.toml"
    path.write_text(text)
    with pytest.raises(HostConfigError, match=needle):
        parse_providers([], read_config_file(path))
