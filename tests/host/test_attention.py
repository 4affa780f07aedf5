"""Needs-input and answers end to end (issue 16, ADR 0032, 0033): a real relay, the real
daemon, real tmux, and a stub provider that asks ``Proceed? [y/N]`` and echoes what it reads.

Detection both ways: the generic rule (a quiet pane whose last lines match) and the
provider's hook (``relay host notify`` run exactly as Claude Code runs it, JSON on
stdin, in the agent's environment). Answers go in literally and come back byte for
byte. A real webhook receiver gets the notice.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.host.conftest import HostProcess, HostWorld, Tmux, requires_tmux, wait_for
from tests.notify.receiver import Receiver

pytestmark = requires_tmux

ASK = Path(__file__).with_name("asking_stub.py")
SECRET = "s3cret-for-notices-0123456789"


def start(world: HostWorld, *extra: str) -> HostProcess:
    """The daemon with ``claude`` being the asking stub."""
    args = [*world.host_args(providers=()), "--provider",
            f"claude={shlex.join([sys.executable, str(ASK)])}"]
    host = HostProcess(args, world.root / "host.log").start(extra)
    world.hosts.append(host)
    world.wait_online()
    return host


def spawn(world: HostWorld, mode: str) -> tuple[str, dict[str, Any]]:
    """Spawn an asking stub in ``mode``; returns its agent id and its start record."""
    cid = world.api.spawn(world.oid, provider="claude", label=mode, prompt=mode)
    cmd = world.api.settled(world.oid, cid)
    assert cmd["status"] == "done", (cmd, world.host_log())
    agent_id = cmd["result"]["agentId"]
    record = wait_for(
        lambda: next((r for r in world.starts() if r.get("commandId") == cid), None),
        20, f"the stub of {cid} to start",
    )
    wait_for(lambda: any(m["agentId"] == agent_id for m in world.managed()), 10, "it to be reported")
    return agent_id, record


def agent(world: HostWorld, agent_id: str) -> dict[str, Any]:
    listed = world.api.ok("GET", "/api/managed-agents")
    return next(m for m in listed if m["agentId"] == agent_id)


def until_attention(
    world: HostWorld, agent_id: str, attention: str | None, timeout: float = 15
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        m = agent(world, agent_id)
        return m if m["attention"] == attention else None

    return wait_for(check, timeout, f"{agent_id} attention {attention}\n{world.host_log()}")


def answers(world: HostWorld, agent_id: str) -> list[str]:
    return [r["answer"] for r in world.starts() if r.get("agentId") == agent_id and "answer" in r]


def type_in(world: HostWorld, agent_id: str, text: str, enter: bool | None = None) -> str:
    body: dict[str, Any] = {"action": "input", "agentId": agent_id, "text": text}
    if enter is not None:
        body["enter"] = enter
    return str(world.api.ok("POST", f"/api/orchestrators/{world.oid}/actions", body)["command"]["id"])


def log_events(world: HostWorld, *types: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = world.api.ok("GET", f"/api/log?after={after}&limit=1000")
        out += [e for e in page["events"] if e["type"] in types]
        if not page["events"]:
            return out
        after = page["next"]


def test_a_question_is_detected_answered_literally_and_asked_again(world: HostWorld) -> None:
    start(world, "--idle-after", "1")
    agent_id, _ = spawn(world, "ask")
    waiting = until_attention(world, agent_id, "input")
    assert waiting["attentionReason"].startswith("no output for 1s; matches "), waiting
    assert waiting["attentionExcerpt"].endswith("Proceed? [y/N]"), waiting
    assert "round 1: about to delete 3 files" in waiting["attentionExcerpt"]

    pwned = world.base / "pwned"
    texts = [
        f"$(touch {pwned})", "$(reboot)", "C-c", "Enter", "'single' \"double\" `id` \\n",
        "é 漢字 🙂 ﷽", "ends with;", ";", "\\;", "-l", "--", "tab\there", "#{pane_id} ~ %% $HOME",
    ]
    cids = [type_in(world, agent_id, t) for t in texts]
    for cid in cids:
        assert world.api.settled(world.oid, cid)["status"] == "done", world.host_log()
    wait_for(lambda: len(answers(world, agent_id)) >= len(texts), 15, "every answer to be read")
    assert answers(world, agent_id) == [t + "\n" for t in texts]
    assert not pwned.exists()  # typed, never run

    # The first answer cleared the question, in the same transaction as its result.
    resumed = log_events(world, "AgentInputResumed")
    assert resumed[0]["data"]["reason"] == "input sent"
    assert resumed[0]["data"]["commandId"] == cids[0]
    # ... and it asks again: a new fact, after the answers.
    again = until_attention(world, agent_id, "input")
    assert again["attentionSince"] > resumed[0]["at"]
    assert f"round {len(texts) + 1}" in again["attentionExcerpt"]


def test_a_quiet_agent_that_asks_nothing_is_idle_and_an_answer_resumes_it(world: HostWorld) -> None:
    start(world, "--idle-after", "1")
    agent_id, _ = spawn(world, "wait")
    idle = until_attention(world, agent_id, "idle")
    assert idle["attentionReason"] == "no output for 1s"
    assert "stub: ready for instructions" in idle["attentionExcerpt"]
    assert world.api.ok("GET", "/api/managed-agents?attention=input") == []

    cid = type_in(world, agent_id, "abc", enter=False)
    assert world.api.settled(world.oid, cid)["status"] == "done"
    cid = type_in(world, agent_id, "", enter=True)
    assert world.api.settled(world.oid, cid)["status"] == "done"
    wait_for(lambda: answers(world, agent_id) == ["abc\n"], 10, "the line typed in two steps")
    assert [e["data"]["reason"] for e in log_events(world, "AgentInputResumed")][:1] == ["input sent"]

    # An agent whose pane ended cannot be answered: the command says why.
    world.tmux.kill_server()
    cid = type_in(world, agent_id, "late")
    failed = world.api.settled(world.oid, cid)
    assert failed["status"] == "failed" and "nothing was typed" in failed["result"]["error"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as r:
        yield r


@pytest.fixture
def notify_world(tmp_path: Path, tmux_socket: Tmux, receiver: Receiver) -> Iterator[HostWorld]:
    w = HostWorld(tmp_path, tmux_socket, relay_args=["--notify-url", receiver.url, "--notify-secret", SECRET])
    w.relay.start()
    yield w
    w.close()


def hook(record: dict[str, Any], payload: dict[str, Any]) -> None:
    """Run ``relay host notify`` as Claude Code runs a hook: the agent's env, JSON on stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "TMUX"))}
    env.update(record["hookEnv"])
    done = subprocess.run(
        [sys.executable, "-m", "relay", "host", "notify"], input=json.dumps(payload).encode(),
        env=env, capture_output=True, timeout=30, check=False,
    )
    assert done.returncode == 0 and done.stdout == b"", done


def test_the_provider_hook_reports_it_and_a_notice_is_delivered(
    notify_world: HostWorld, receiver: Receiver
) -> None:
    world = notify_world
    start(world, "--idle-after", "0")  # the generic rule off: only the hook can tell
    agent_id, record = spawn(world, "wait")
    assert record["hookEnv"]["RELAY_AGENT_ID"] == agent_id
    assert record["relayToken"] is None  # the agent holds no token: it drops a file
    message = "Claude needs your permission to use Bash"
    hook(record, {"hook_event_name": "Notification", "notification_type": "permission_prompt",
                  "message": message, "session_id": "sess-5f1c", "cwd": "/x"})
    waiting = until_attention(world, agent_id, "input")
    assert waiting["attentionReason"] == f"permission_prompt: {message}"
    assert "ready for instructions" in waiting["attentionExcerpt"]
    wait_for(lambda: agent(world, agent_id).get("sessionId") == "sess-5f1c", 10, "the session id")

    receiver.wait(lambda r: len(r.notices) >= 1)
    notice = receiver.notices[0]
    assert (notice["kind"], notice["event"], notice["entityId"]) == (
        "agent.awaitingInput", "AgentAwaitingInput", world.oid
    )
    assert notice["data"]["agentId"] == agent_id
    assert notice["data"]["reason"] == f"permission_prompt: {message}"
    assert notice["id"] == log_events(world, "AgentAwaitingInput")[0]["position"]
    assert receiver.rejected == []  # signed as the README says

    # A person answers at the terminal itself: the output moves on, and so does the relay.
    subprocess.run(["tmux", "-L", world.tmux.socket, "send-keys", "-t", f"={waiting['tmuxSession']}:",
                    "-l", "by hand"], check=True)
    subprocess.run(["tmux", "-L", world.tmux.socket, "send-keys", "-t", f"={waiting['tmuxSession']}:",
                    "Enter"], check=True)
    until_attention(world, agent_id, None)
    assert log_events(world, "AgentInputResumed")[-1]["data"]["reason"] == "output"

    # Idle at its prompt (no page for that), then the user submits a prompt: resumed.
    hook(record, {"hook_event_name": "Notification", "notification_type": "idle_prompt",
                  "message": "Claude is waiting for your input", "session_id": "sess-5f1c"})
    until_attention(world, agent_id, "idle")
    hook(record, {"hook_event_name": "UserPromptSubmit", "session_id": "sess-5f1c", "prompt": "go"})
    until_attention(world, agent_id, None)
    assert log_events(world, "AgentInputResumed")[-1]["data"]["reason"] == "hook: UserPromptSubmit"
    assert [n["kind"] for n in receiver.notices] == ["agent.awaitingInput"]


def test_a_restarted_daemon_neither_repeats_a_fact_nor_leaves_a_stale_one(world: HostWorld) -> None:
    host = start(world, "--idle-after", "1")
    steady, _ = spawn(world, "ask")  # first: looked at (and told) before the other one
    moved, _ = spawn(world, "ask")
    before = until_attention(world, steady, "input")
    waiting = until_attention(world, moved, "input")
    host.kill9()
    mark = world.api.ok("GET", "/api/health")["checks"]
    mark = next(ch["position"] for ch in mark if ch["name"] == "readModels")

    def since(*types: str) -> list[dict[str, Any]]:
        return [e for e in log_events(world, *types) if e["position"] > mark]

    # While no daemon watches, a person answers one of them at its terminal.
    pane = f"={waiting['tmuxSession']}:"
    subprocess.run(["tmux", "-L", world.tmux.socket, "send-keys", "-t", pane, "-l", "n"], check=True)
    subprocess.run(["tmux", "-L", world.tmux.socket, "send-keys", "-t", pane, "Enter"], check=True)
    wait_for(lambda: answers(world, moved) == ["n\n"], 10, "the answer by hand")

    start(world, "--idle-after", "1")
    try:
        resumed = wait_for(lambda: since("AgentInputResumed"), 15, f"the stale wait of {moved} to end")
    except AssertionError:
        raise AssertionError(
            f"{since('AgentInputResumed', 'AgentAwaitingInput')}\n{world.host_log()}"
        ) from None
    assert [(e["data"]["agentId"], e["data"]["reason"]) for e in resumed] == [(moved, "output")]
    # The unchanged one was looked at first, and nothing was said about it: no second notice.
    assert [e["data"]["agentId"] for e in since("AgentAwaitingInput")] in ([], [moved])
    assert agent(world, steady)["attentionSince"] == before["attentionSince"]
