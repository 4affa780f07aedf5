"""Every SSE frame has its own id (issue 12, ADR 0007 amended).

A registration yields ``orchestrator.status`` and ``agent.status`` at one log
position. They are ``P.0`` and ``P``: a client cut between them resumes with
``Last-Event-ID: P.0`` and gets the second; ids are the same under every filter
(K counts the unfiltered frames of the position).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from relay.http.sse import encode
from relay.projections.fold import Changed
from tests.http.helpers import managed, register_orchestrator
from tests.sse.conftest import Connect, Open, Start
from tests.sse.support import Event, SseStream
from tests.sse.test_resume_property import WRITES, _write
from tests.support.client import Client
from tests.support.server import RelayProcess

QUIET = ("--seal-every", "0", "--reap-every", "3600", "--keepalive", "60")


def _ids(events: list[Event]) -> list[str | None]:
    return [e.id for e in events]


def test_two_events_of_one_position_have_two_ids(start: Start, connect: Connect, sse: Open) -> None:
    relay = start(*QUIET)
    c = connect(relay)
    with sse(relay) as s:
        assert s.next_events() == []  # retry:
        register_orchestrator(c, "o1")
        p = c.log_head()
        events = s.read_until_position(p)
    assert [(e.id, e.event) for e in events] == [
        (f"{p}.0", "orchestrator.status"),
        (str(p), "agent.status"),
    ]


@pytest.mark.parametrize("where", ["ring", "store"])
def test_a_cut_after_p0_resumes_with_the_second_event(
    start: Start, connect: Connect, sse: Open, where: str
) -> None:
    """The client stops reading after ``P.0`` (mid-chunk) and reconnects with that id:
    the first event it gets is P's second one, then the rest of the log, once."""
    relay = start(*QUIET, env={"RELAY_SSE_RING": "1"} if where == "store" else None)
    c = connect(relay)
    before = c.log_head()
    register_orchestrator(c, "o1")
    p = c.log_head()
    c.post("/api/agents", {"id": "later"})
    c.post("/api/agents", {"id": "later2"})  # the ring of 1 no longer holds p
    head = c.log_head()
    with sse(relay, {"since": str(before)}) as s:
        first = s.read_until_position(p)
    assert first[0].id == f"{p}.0"
    with sse(relay, headers={"Last-Event-ID": f"{p}.0"}) as again:
        assert again.status == 200, again.body
        rest = again.read_until_position(head)
    assert [(e.id, e.event) for e in rest] == [
        (str(p), "agent.status"),
        (str(p + 1), "agent.status"),
        (str(head), "agent.status"),
    ]
    assert rest[0].json()["id"] == "orchestrator-o1"
    # A bare P (header or ?since=) means all of P was delivered.
    for kw in ({"headers": {"Last-Event-ID": str(p)}}, {"query": {"since": str(p)}}):
        with sse(relay, **kw) as s:
            assert _ids(s.read_until_position(head)) == [str(p + 1), str(head)]


def test_ids_are_the_same_under_every_filter(start: Start, connect: Connect, sse: Open) -> None:
    relay = start(*QUIET)
    c = connect(relay)
    start_at = c.log_head()
    register_orchestrator(c, "o1")
    assert c.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1"), managed("m2")]}).status == 200
    c.post("/api/orchestrators/o1/spawn", {"provider": "claude"})
    head = c.log_head()
    with sse(relay, {"since": str(start_at)}) as s:
        everything = s.read_until_position(head)
    assert len({e.id for e in everything}) == len(everything), "an id is shared"
    keys = [e.key for e in everything]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    filters = {
        "types=agent": ({"types": "agent"}, lambda e: e.event.startswith("agent.")),
        "types=orchestrator": ({"types": "orchestrator"}, lambda e: e.event.startswith("orchestrator.")),
        "orchestrator=o1": (
            {"orchestrator": "o1"},
            lambda e: e.event.startswith("orchestrator.")
            and "o1" in (e.json().get("orchestratorId"), e.json().get("id")),
        ),
        "agent=orchestrator-o1": (
            {"agent": "orchestrator-o1"},
            lambda e: (e.event.startswith("agent.") and e.json()["id"] == "orchestrator-o1")
                or (e.event.startswith("message.") and e.json()["to"] == "orchestrator-o1"),
        ),
    }
    for name, (query, wanted) in filters.items():
        expected = [e for e in everything if wanted(e)]
        assert expected, name
        with sse(relay, {"since": str(start_at), **query}) as s:
            got: list[Event] = []
            while len(got) < len(expected):
                got.extend(s.next_events(timeout=15))
        assert [(e.id, e.event, e.data) for e in got] == [(e.id, e.event, e.data) for e in expected], name
    # Under a filter a position's last delivered frame can be a ``P.K``: the split is real.
    assert any("." in (e.id or "") for e in everything if e.event.startswith("orchestrator."))


def test_malformed_ids_are_refused(start: Start, sse: Open) -> None:
    relay = start(*QUIET)
    for header in ("5.x", "5.", ".1", "5.-1", "1.2.3", "P", "5.0.", "1" * 19):
        with sse(relay, headers={"Last-Event-ID": header}) as s:
            assert s.status == 400, (header, s.status)
            assert "Last-Event-ID" in s.body["error"]


@pytest.mark.parametrize("where", ["ring", "store"])
def test_ids_the_log_never_gave_out_are_refused(
    start: Start, connect: Connect, sse: Open, where: str
) -> None:
    relay = start(*QUIET, env={"RELAY_SSE_RING": "1"} if where == "store" else None)
    c = connect(relay)
    c.post("/api/agents", {"id": "single"})  # one event: only the bare id
    single = c.log_head()
    register_orchestrator(c, "o1")  # two events: p.0 and p
    p = c.log_head()
    c.post("/api/agents", {"id": "push"})
    c.post("/api/agents", {"id": "push2"})
    for bad in (f"{p}.1", f"{p}.7", f"{single}.0", "0.0"):
        with sse(relay, headers={"Last-Event-ID": bad}) as s:
            assert s.status == 409, (bad, s.body)
            assert "Last-Event-ID" in s.body["error"]
    with sse(relay, {"since": f"{p}.0"}) as s:  # ?since= takes the same ids
        assert s.status == 200
        assert s.read_until_position(p)[0].id == str(p)


# -- encoding: ids of any list of changes -----------------------------------------------------


@given(st.integers(1, 10**12), st.integers(0, 40))
def test_encoded_ids_are_unique_and_increase(position: int, n: int) -> None:
    changes = [(Changed.AGENT, {"id": f"a{k}"}) for k in range(n)]
    frames = encode(position, changes)
    ids = [f.data.split(b"\n", 1)[0].removeprefix(b"id: ").decode() for f in frames]
    assert ids == [f"{position}.{k}" for k in range(n - 1)] + ([str(position)] if n else [])


# -- the property: cut anywhere, between any two frames, resume, get each frame once ----------


_examples = itertools.count()
write_step = st.tuples(st.just("write"), st.sampled_from(WRITES), st.integers(0, 2))
cut_step = st.tuples(st.just("cut"), st.sampled_from(("header", "since")), st.integers(0, 5))
steps = st.lists(st.one_of(write_step, write_step, cut_step), min_size=1, max_size=20)


@pytest.fixture(scope="module")
def small_ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    data: Path = tmp_path_factory.mktemp("frame-ids") / "data"
    proc = RelayProcess(
        data, [*QUIET, "--max-streams-per-client", "0"], env={"RELAY_SSE_RING": "3"}
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


class FrameReader:
    """A client that takes events one at a time, so it can stop between two events of one chunk."""

    def __init__(self, stream: SseStream, start: int) -> None:
        self.stream = stream
        self.start = start
        self.queue: deque[Event] = deque()

    def take(self, n: int, head_key: tuple[int, float], got: list[Event]) -> None:
        """Up to ``n`` more events, never waiting past the log's head."""
        for _ in range(n):
            if (got[-1].key if got else (self.start, float("inf"))) >= head_key:
                return
            while not self.queue:
                self.queue.extend(self.stream.next_events(timeout=15))
            got.append(self.queue.popleft())


@given(steps=steps)
def test_resume_from_any_frame_delivers_every_frame_once(
    small_ring: RelayProcess, steps: list[Any]
) -> None:
    relay = small_ring
    prefix = f"f{next(_examples)}-"
    c = Client(relay.url)
    start = c.log_head()
    reference = SseStream(relay.url, {"since": str(start)})
    reader = FrameReader(SseStream(relay.url, {"since": str(start)}), start)
    got: list[Event] = []
    try:
        for step in steps:
            if step[0] == "write":
                _write(c, prefix, step[1], step[2])
                continue
            _, how, n = step
            reader.take(n, (c.log_head(), float("inf")), got)
            reader.stream.close()
            last = got[-1].id if got else str(start)
            assert last is not None
            note(f"cut after {len(got)} events at id {last}; resume via {how}")
            s = SseStream(
                relay.url,
                {"since": last} if how == "since" else {"since": "0"},
                {"Last-Event-ID": last} if how == "header" else None,
            )
            assert s.status == 200, s.body
            reader = FrameReader(s, start)
        head = c.log_head()
        expected = reference.read_until_position(head) if head > start else []
        reader.take(len(expected), (head, float("inf")), got)
        assert [(e.id, e.event, e.data) for e in got] == [(e.id, e.event, e.data) for e in expected]
        keys = [e.key for e in got]
        assert keys == sorted(set(keys)), "ids repeat or go back"
    finally:
        reference.close()
        reader.stream.close()
        c.close()


# -- the host daemon's resume ---------------------------------------------------------------


def test_the_host_client_resumes_from_a_p_k_id(start: Start, connect: Connect) -> None:
    """A registration's orchestrator record and agent record share a position; under
    ``?orchestrator=`` the host sees only the first, ``P.0``. The host daemon stores
    that id as it came and sends it back; the relay resumes after it."""
    import asyncio

    from relay.host.client import RelayClient

    relay = start(*QUIET)
    c = connect(relay)
    before = c.log_head()
    register_orchestrator(c, "oh")
    p = c.log_head()
    command = c.post("/api/orchestrators/oh/spawn", {"provider": "claude"}).json["command"]["id"]

    async def first_event(last_event_id: str) -> tuple[str | None, str, str]:
        async with RelayClient(relay.url, "oh") as host, host.event_stream(last_event_id) as events:
            async for ev in events:
                return ev.id, ev.event, ev.json()["id"]
        raise AssertionError("the stream ended")

    assert asyncio.run(first_event(str(before))) == (f"{p}.0", "orchestrator.status", "oh")
    resumed = asyncio.run(first_event(f"{p}.0"))
    assert resumed[1:] == ("orchestrator.command", command)
