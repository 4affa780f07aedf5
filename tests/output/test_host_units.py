"""The host's output pieces that need no tmux: screens as terminal input, and batching."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from relay.host.output import OutputConfig, OutputStreamer, Tap, snapshot_text
from relay.host.tmux import Screen


def _streamer(enabled: bool = True) -> OutputStreamer:
    ctx: Any = SimpleNamespace(state=SimpleNamespace(agents=[]))
    return OutputStreamer(ctx, OutputConfig(enabled=enabled))


def test_a_screen_is_rebuilt_with_its_cursor_and_history_trimmed_from_the_top() -> None:
    lines = [f"old {i}" for i in range(100)] + ["\x1b[31mred\x1b[0m", "$ ", ""]
    screen = Screen(lines, cursor_x=2, cursor_y=1, cols=80, rows=3, alternate=False)
    whole = snapshot_text(screen, 1 << 20)
    assert whole == "\r\n".join(lines) + "\x1b[0m\x1b[2;3H"
    small = snapshot_text(screen, 200)
    assert len(json.dumps(small).encode()) <= 200 + 40  # the screen rows are never dropped
    assert small.startswith("old ") and "old 0\r\n" not in small
    assert small.endswith("\x1b[31mred\x1b[0m\r\n$ \r\n\x1b[0m\x1b[2;3H")
    tiny = snapshot_text(screen, 1)
    assert tiny.startswith("\x1b[31mred")  # only the screen is left
    alt = snapshot_text(Screen(["x"], 0, 0, 80, 1, alternate=True), 100)
    assert alt.startswith("\x1b[?1049h")


def test_a_push_takes_whole_items_in_order_within_its_size() -> None:
    s = _streamer()
    s.limits["pushBytes"] = 2000
    for aid in ("a", "b"):
        tap = Tap(aid, f"s-{aid}", "%1", None)  # type: ignore[arg-type]
        s.taps[aid] = tap
        for n in range(6):
            s.received(tap, f"{aid}{n}:".encode() + b"x" * 140)
    body, agents = s._batch()
    chunks = json.loads(body)["chunks"]
    assert len(body) <= 2000 and agents
    assert all("".join(c["data"] for c in chunks).count(f"{aid}{n}:") <= 1 for aid in "ab" for n in range(6))
    rest = []
    while s.queue:
        more, _ = s._batch()
        rest += json.loads(more)["chunks"]
    text = {aid: "".join(c["data"] for c in chunks + rest if c["agentId"] == aid) for aid in "ab"}
    for aid in "ab":  # everything, once, in order
        assert [text[aid].index(f"{aid}{n}:") for n in range(6)] == sorted(
            text[aid].index(f"{aid}{n}:") for n in range(6))
        assert text[aid].count(":") == 6


def test_a_screen_being_captured_holds_back_what_came_after_it() -> None:
    s = _streamer()
    tap = Tap("a", "s", "%1", None)  # type: ignore[arg-type]
    s.taps["a"] = tap
    s.queue["a"] = [{"kind": "snapshot", "data": None, "reset": True}]
    s.received(tap, b"later")
    body, agents = s._batch()
    assert agents == [] and json.loads(body) == {"chunks": []}


def test_more_output_than_a_push_carries_is_dropped_for_a_fresh_screen() -> None:
    s = _streamer()
    s.limits["pushBytes"] = 4096
    tap = Tap("a", "s", "%1", None)  # type: ignore[arg-type]
    s.taps["a"] = tap
    s.received(tap, b"y" * 1000)
    assert s.queued["a"] == 1000 and not s.snapshots
    s.received(tap, b"y" * 1500)  # over half a push waiting: dropped
    assert "a" not in s.queue and s.snapshots == {"a": True} and s.counts["dropped"] == 2500


def test_a_host_with_output_off_watches_nothing() -> None:
    s = _streamer(enabled=False)
    s.on_watch({"agents": ["a"], "refresh": ["a"], "limits": {"pushBytes": 9000}})
    assert s.wanted == set() and s.refresh == set() and s.limits["pushBytes"] == 9000
    on = _streamer()
    on.on_watch({"agents": ["a", 7], "refresh": ["a", "b"], "limits": {"pushBytes": True}})
    assert on.wanted == {"a"} and on.refresh == {"a"} and on.limits["pushBytes"] != 1
    on.on_stream_lost()
    assert on.wanted == set()
