"""Property: however a client's connection is cut and resumed, it gets the log once, in order.

Random writes are interleaved with random cut points (after N more positions)
and random ways of resuming (``Last-Event-ID`` or ``?since=``). A reference
client that is never cut reads the same span. The concatenation of what the
cut client received equals the reference's, byte for byte, and both cover
every position of the log in that span: no gaps, no repeats. The relay keeps a
ring of only three positions here, so most resumes are replayed from the
store and the hand-over from replay to live is exercised constantly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tests.http.helpers import full_log, managed
from tests.sse.support import Event, SseStream
from tests.support.client import Client
from tests.support.server import RelayProcess

_examples = itertools.count()

WRITES = ("agent", "agent_heartbeat", "agent_remove", "orch", "orch_heartbeat", "report", "spawn")
write_step = st.tuples(st.just("write"), st.sampled_from(WRITES), st.integers(0, 2))
cut_step = st.tuples(st.just("cut"), st.sampled_from(("header", "since")), st.integers(0, 6))
steps = st.lists(st.one_of(write_step, write_step, cut_step), min_size=1, max_size=25)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    data: Path = tmp_path_factory.mktemp("resume") / "data"
    proc = RelayProcess(
        data,
        ["--seal-every", "0", "--keepalive", "60", "--reap-every", "3600", "--max-streams-per-client", "0"],
        env={"RELAY_SSE_RING": "3"},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def _write(c: Client, prefix: str, kind: str, k: int) -> None:
    """One write; some are refused in the entity's state, which appends nothing."""
    aid, oid = f"{prefix}a{k}", f"{prefix}o{k}"
    if kind == "agent":
        c.post("/api/agents", {"id": aid, "tags": [str(k)]})
    elif kind == "agent_heartbeat":
        c.post(f"/api/agents/{aid}/heartbeat")
    elif kind == "agent_remove":
        c.delete(f"/api/agents/{aid}")
    elif kind == "orch":
        c.post("/api/orchestrators", {"id": oid, "hostname": f"h{k}", "baseDir": "/srv"})
    elif kind == "orch_heartbeat":
        c.post(f"/api/orchestrators/{oid}/heartbeat")
    elif kind == "report":
        c.patch(f"/api/orchestrators/{oid}/agents", {"agents": [managed(f"{prefix}m{k}")]})
    elif kind == "spawn":
        c.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude"})


def _read_positions(s: SseStream, got: list[Event], want: int, start: int, head: int) -> None:
    """Read whole chunks until ``want`` more positions arrived (or everything up to ``head``)."""
    seen = {e.position for e in got}
    target = len(seen) + want
    while len(seen) < target and (got[-1].position if got else start) < head:
        for e in s.next_events(timeout=15):
            got.append(e)
            seen.add(e.position)


@given(steps=steps)
def test_cut_and_resumed_streams_add_up_to_the_log(relay: RelayProcess, steps: list[Any]) -> None:
    prefix = f"x{next(_examples)}-"
    c = Client(relay.url)
    start = c.log_head()
    reference = SseStream(relay.url, {"since": str(start)})
    flaky = SseStream(relay.url, {"since": str(start)})
    got: list[Event] = []
    try:
        for step in steps:
            if step[0] == "write":
                _write(c, prefix, step[1], step[2])
                continue
            _, how, after = step
            _read_positions(flaky, got, after, start, c.log_head())
            flaky.close()
            last = str(got[-1].position) if got else str(start)
            note(f"cut after {len(got)} events; resume from {last} via {how}")
            flaky = SseStream(
                relay.url,
                {"since": last} if how == "since" else {"since": str(start)},
                {"Last-Event-ID": last} if how == "header" else None,
            )
            assert flaky.status == 200, flaky.body
        head = c.log_head()
        if head > start:
            if not got or got[-1].position < head:
                got.extend(flaky.read_until_position(head))
            expected = reference.read_until_position(head)
        else:
            expected = []
        wire = [(e.id, e.event, e.data) for e in got]
        assert wire == [(e.id, e.event, e.data) for e in expected]
        positions = [e["position"] for e in full_log(c) if start < e["position"] <= head]
        assert sorted({e.position for e in got}) == positions
        assert [e.position for e in got] == sorted(e.position for e in got)
    finally:
        reference.close()
        flaky.close()
        c.close()
