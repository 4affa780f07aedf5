"""The parts of needs-input and answers that need no relay (ADR 0032, 0033).

What a hook call means, the notice folder read with suspicion, and the one
property that makes an answer safe: text typed through ``Tmux.send_text``
arrives exactly as sent, whatever it holds (real tmux, Hypothesis).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.host.notice import KEEP, hook_notice, read_notices, write_notice
from relay.host.tmux import SEND_CHUNK, Tmux, literal_arg
from tests.host.conftest import requires_tmux

MSG = "Claude needs your permission to use Bash"


@pytest.mark.parametrize(
    ("hook", "attention", "reason"),
    [
        ({"hook_event_name": "Notification", "notification_type": "permission_prompt", "message": MSG},
         "input", f"permission_prompt: {MSG}"),
        ({"hook_event_name": "Notification", "notification_type": "elicitation_dialog", "message": "Pick"},
         "input", "elicitation_dialog: Pick"),
        ({"hook_event_name": "Notification", "notification_type": "idle_prompt",
          "message": "Claude is waiting for your input"},
         "idle", "idle_prompt: Claude is waiting for your input"),
        ({"hook_event_name": "Notification", "notification_type": "auth_success", "message": "ok"},
         KEEP, ""),
        ({"hook_event_name": "Notification", "notification_type": "elicitation_complete", "message": "ok"},
         None, "hook: elicitation_complete"),
        # Claude Code before notification_type: the message alone says it waits.
        ({"hook_event_name": "Notification", "message": MSG}, "input", MSG),
        ({"hook_event_name": "Stop"}, "idle", "Stop: the agent finished its turn"),
        ({"hook_event_name": "UserPromptSubmit", "prompt": "go"}, None, "hook: UserPromptSubmit"),
        ({"hook_event_name": "PreToolUse", "tool_name": "Bash"}, None, "hook: PreToolUse"),
        ({"hook_event_name": "SessionStart", "source": "resume"}, KEEP, ""),
        ({}, KEEP, ""),
    ],
)
def test_what_a_claude_code_hook_means(hook: dict[str, str], attention: str | None, reason: str) -> None:
    notice = hook_notice({**hook, "session_id": "sess-1"})
    assert (notice["attention"], notice["reason"], notice["sessionId"]) == (attention, reason, "sess-1")


def test_a_hook_for_another_provider_says_it_outright() -> None:
    assert hook_notice({}, "input", "approve the plan")["attention"] == "input"
    assert hook_notice({}, "none")["attention"] is None
    # What the relay would refuse is cleaned here: control characters, length, odd ids.
    n = hook_notice({"hook_event_name": "Notification", "message": "\x1b[31mred\x07 " + "x" * 500,
                     "session_id": "s" * 201})
    assert "\x1b" not in n["reason"] and "\x07" not in n["reason"] and len(n["reason"]) == 200
    assert n["sessionId"] is None


def test_notices_are_read_in_order_once_and_junk_is_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "host.notify"
    first = write_notice(folder, "a1", "relay-a1", {"attention": "input", "reason": "1"})
    write_notice(folder, "a1", "relay-a1", {"attention": None, "reason": "2"})
    (folder / "0-junk.json").write_text("not json")
    (folder / "1-list.json").write_text("[1, 2]")
    (folder / "2-big.json").write_bytes(b" " * (65 * 1024))
    (folder / ".in-flight.json.tmp").write_text("{}")  # a writer's temp file: not yet a notice
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert oct(os.stat(first).st_mode & 0o777) == "0o600"
    got = read_notices(folder)
    assert [(n["agentId"], n["reason"], n["tmuxSession"]) for n in got] == [
        ("a1", "1", "relay-a1"), ("a1", "2", "relay-a1")
    ]
    assert sorted(os.listdir(folder)) == [".in-flight.json.tmp"]
    assert read_notices(folder) == [] and read_notices(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("text", "arg"),
    [("y", "y"), ("a;", "a\\;"), (";", "\\;"), ("a\\;", "a\\\\;"), ("a;b", "a;b"), ("", "")],
)
def test_only_a_trailing_semicolon_is_special_to_tmux(text: str, arg: str) -> None:
    assert literal_arg(text) == arg


# -- the property, on a real pane -----------------------------------------------------------

READER = """
import json, os, sys
out = sys.argv[1]
for line in sys.stdin:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (json.dumps(line) + "\\n").encode())
    os.close(fd)
"""

# What the relay lets through (relay.domain.rules.check_input_text), less the newline
# (one line per example) and what a terminal in canonical mode edits (none of it is
# printable). Surrogates cannot come from JSON.
TYPABLE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), include_characters="\t")
TEXTS = st.one_of(
    st.text(TYPABLE, max_size=60),
    st.text(TYPABLE, max_size=20).map(lambda t: t + ";"),
    st.text(st.sampled_from(list(";\\-$`'\"#{}~%C-cEnter ")), max_size=20),
)


class Pane:
    """One tmux session whose program appends each line it reads to a file, as JSON."""

    def __init__(self, root: Path) -> None:
        self.tmux = Tmux(f"relay-prop-{uuid.uuid4().hex[:8]}")
        self.out = root / "lines.jsonl"
        self.loop = asyncio.new_event_loop()
        self.name = "reader"
        (root / "launch").mkdir()
        self.loop.run_until_complete(self.tmux.start(
            self.name, root, [sys.executable, "-c", READER, str(self.out)], dict(os.environ),
            root / "launch",
        ))
        self.seen = 0

    def type_line(self, text: str) -> str:
        self.loop.run_until_complete(self.tmux.send_text(self.name, text, enter=True))
        deadline = time.monotonic() + 10
        while True:
            lines = self.out.read_text().splitlines() if self.out.exists() else []
            if len(lines) > self.seen:
                self.seen += 1
                return str(json.loads(lines[self.seen - 1]))
            assert time.monotonic() < deadline, f"{text!r} never arrived"
            time.sleep(0.005)

    def close(self) -> None:
        self.loop.run_until_complete(self.tmux.kill_server())
        self.loop.close()


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    p = Pane(tmp_path)
    yield p
    p.close()


@requires_tmux
def test_text_is_typed_exactly_as_sent(pane: Pane) -> None:
    """Invariant 19: whatever an operator sends arrives as those characters, no more, no less."""
    examples = 300 if settings.default.max_examples > 100 else 25  # a real pane: ~0.15 s each

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(TEXTS)
    @example("$(reboot)")
    @example("C-c")
    @example("ends with;")
    @example("\\;")
    @example("'single' \"double\" é 漢 🙂")
    def typed(text: str) -> None:
        assert pane.type_line(text) == text + "\n"

    typed()


@requires_tmux
def test_a_long_text_goes_in_chunks_and_arrives_whole(pane: Pane) -> None:
    text = ("abc;" * 250)[: SEND_CHUNK * 3 + 7]  # chunks that end in ';' too
    assert pane.type_line(text) == text + "\n"
