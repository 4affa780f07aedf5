"""``GET /api/events`` over a real socket: framing, resume, filters, keep-alive, shutdown."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from relay.projections.readmodels import NO_ATTENTION
from tests.http.helpers import full_log, managed, register_agent, register_orchestrator
from tests.sse.conftest import Connect, Open, Start
from tests.sse.support import Event, StreamEnded
from tests.support.client import Client
from tests.support.server import RelayProcess

NO_SEALS = ("--seal-every", "0")


def scenario(c: Client) -> None:
    """A bit of everything the stream reports, commands and removals included."""
    register_orchestrator(c, "o1", hostname="alpha")
    register_orchestrator(c, "o2", hostname="beta")
    register_agent(c, "a1", tags=["x"])
    c.post("/api/orchestrators/o1/heartbeat")
    assert c.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1")]}).status == 200
    spawn = c.post("/api/orchestrators/o1/spawn", {"provider": "claude", "cwd": "a"}).json
    cid = spawn["command"]["id"]
    c.post(f"/api/orchestrators/o1/commands/{cid}/result", {"status": "done", "agentId": "m1"})
    c.post("/api/orchestrators/o2/actions", {"action": "restart"})
    c.post("/api/agents/a1/heartbeat")
    c.delete("/api/agents/a1")
    c.delete("/api/orchestrators/o2")
    register_orchestrator(c, "o2", hostname="gamma")


def wire(events: list[Event]) -> list[tuple[int, str, Any]]:
    return [(e.position, e.event, e.json()) for e in events]


def test_headers_retry_and_one_event_per_change(start: Start, connect: Connect, sse: Open) -> None:
    relay = start(*NO_SEALS)
    c = connect(relay)
    with sse(relay) as s:
        assert s.status == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        assert s.headers["cache-control"] == "no-cache"
        assert s.headers["x-accel-buffering"] == "no"
        assert s.headers["transfer-encoding"] == "chunked"
        assert s.next_events() == [] and s.retry is not None and s.retry > 0
        register_orchestrator(c, "o1", hostname="alpha")
        head = c.log_head()
        events = s.read_until_position(head)
    assert [(e.position, e.event) for e in events] == [
        (head, "orchestrator.status"),
        (head, "agent.status"),
    ]
    assert events[0].json() == c.get("/api/orchestrators/o1").json
    assert events[1].json() == c.get("/api/agents/orchestrator-o1").json


def test_every_position_of_the_log_arrives_in_order_with_the_entity_as_it_was(
    start: Start, connect: Connect, sse: Open
) -> None:
    relay = start(*NO_SEALS)
    c = connect(relay)
    with sse(relay) as s:
        s.next_events()
        scenario(c)
        events = s.read_until_position(c.log_head())
    positions = [e["position"] for e in full_log(c)]
    assert sorted({e.position for e in events}) == positions
    assert [e.position for e in events] == sorted(e.position for e in events)
    names = [e.event for e in events]
    assert names.count("orchestrator.command") == 3  # spawn, its result, the restart
    assert "agent.removed" in names and "orchestrator.removed" in names
    # a heartbeat's frame shows lastSeen as of that heartbeat, not as of now
    o1 = [e.json() for e in events if e.event == "orchestrator.status" and e.json()["id"] == "o1"]
    m1 = {**managed("m1"), "state": "running", **NO_ATTENTION}
    assert [x["managedAgents"] for x in o1][:3] == [[], [], [m1]]


def test_resume_from_the_ring_and_from_the_store_after_a_restart(
    start: Start, connect: Connect, sse: Open
) -> None:
    relay = start(*NO_SEALS)
    c = connect(relay)
    with sse(relay, {"since": "0"}) as live:
        scenario(c)
        head = c.log_head()
        everything = wire(live.read_until_position(head))
        c.close()
    # From the ring, in the same process: the header wins over ?since=.
    middle = head // 2
    with sse(relay, {"since": "1"}, {"Last-Event-ID": str(middle)}) as s:
        assert wire(s.read_until_position(head)) == [x for x in everything if x[0] > middle]
    data = relay.data_dir
    relay.stop()
    # After a restart the ring is empty: the past is replayed from the store.
    again = start(*NO_SEALS, data=data)
    for since in (0, 1, middle, head - 1):
        with sse(again, {"since": str(since)}) as s:
            got = wire(s.read_until_position(head)) if since < head else []
            assert got == [x for x in everything if x[0] > since], since
    with sse(again, {"since": str(head)}) as s:  # up to date: nothing, then live
        c = connect(again)
        c.post("/api/orchestrators/o1/heartbeat")
        (event,) = s.read_until_position(head + 1)
        assert (event.position, event.event) == (head + 1, "orchestrator.status")


def test_resume_when_the_ring_is_tiny_goes_through_the_store_without_a_seam(
    start: Start, connect: Connect, sse: Open
) -> None:
    relay = start(*NO_SEALS, env={"RELAY_SSE_RING": "2"})
    c = connect(relay)
    with sse(relay, {"since": "0"}) as live:
        scenario(c)
        everything = wire(live.read_until_position(c.log_head()))
        for since in range(0, c.log_head()):
            with sse(relay, headers={"Last-Event-ID": str(since)}) as s:
                head = c.log_head()
                got = wire(s.read_until_position(head))
                assert got == [x for x in everything if x[0] > since], since


def test_types_and_orchestrator_filters(start: Start, connect: Connect, sse: Open) -> None:
    relay = start(*NO_SEALS)
    c = connect(relay)
    agents = sse(relay, {"types": "agent"})
    orchs = sse(relay, {"types": "orchestrator"})
    both = sse(relay, {"types": "agent,orchestrator"})
    only_o1 = sse(relay, {"orchestrator": "o1"})
    for s in (agents, orchs, both, only_o1):
        s.next_events()
    scenario(c)
    c.post("/api/orchestrators/o1/heartbeat")  # the last of o1's family
    o1_last = c.log_head()
    register_agent(c, "a9")  # the last of the agent family
    head = c.log_head()
    got_agents = agents.read_until_position(head)
    got_orchs = orchs.read_until_position(o1_last)
    got_both = both.read_until_position(head)
    got_o1 = only_o1.read_until_position(o1_last)
    assert {e.event.split(".")[0] for e in got_agents} == {"agent"}
    assert {e.event.split(".")[0] for e in got_orchs} == {"orchestrator"}
    assert len(got_both) == len(got_agents) + len(got_orchs)
    assert got_o1 and all(
        e.event.startswith("orchestrator.")
        and (e.json().get("orchestratorId") or e.json()["id"]) == "o1"
        for e in got_o1
    )
    # The orchestrator's own stream also hears who watches its agents' output (ADR 0031).
    got_o1_log = {e.event for e in got_o1} - {"orchestrator.watch"}
    assert got_o1_log == {"orchestrator.status", "orchestrator.command"}
    for s in (agents, orchs, both, only_o1):
        s.close()


@pytest.mark.parametrize(
    ("query", "headers", "status", "field"),
    [
        ({"since": "abc"}, {}, 400, "since"),
        ({}, {"Last-Event-ID": "-1"}, 400, "Last-Event-ID"),
        ({"types": "agent,bogus"}, {}, 400, "types"),
        ({"orchestrator": "has space"}, {}, 400, "orchestrator"),
        ({"since": "1000000"}, {}, 409, "since"),
        ({"since": "0"}, {"Last-Event-ID": "999999"}, 409, "Last-Event-ID"),
    ],
)
def test_bad_resume_positions_and_filters_get_a_clear_answer(
    start: Start,
    connect: Connect,
    sse: Open,
    query: dict[str, str], headers: dict[str, str], status: int, field: str
) -> None:
    relay = start(*NO_SEALS)
    register_orchestrator(connect(relay), "o1")
    s = sse(relay, query, headers)
    assert s.status == status
    assert s.body["error"].startswith(field), s.body


def test_keepalive_comments_arrive(start: Start, connect: Connect, sse: Open) -> None:
    relay = start(*NO_SEALS, "--keepalive", "0.2")
    with sse(relay) as s:
        deadline = time.monotonic() + 10
        while s.comments.count("keep-alive") < 3:
            assert time.monotonic() < deadline, s.comments
            assert s.next_events(timeout=5) == []


def test_clean_shutdown_ends_every_stream(start: Start, connect: Connect, sse: Open) -> None:
    relay = start(*NO_SEALS)
    c = connect(relay)
    register_orchestrator(c, "o1")
    streams = [
        sse(relay),
        sse(relay, {"since": "0"}),
        sse(relay, {"orchestrator": "o1"}),
        sse(relay, {"types": "agent"}),
    ]
    for s in streams:
        s.next_events()
    t0 = time.monotonic()
    assert relay.stop() == 0
    assert time.monotonic() - t0 < 5, "a stream held up the shutdown"
    for s in streams:
        with pytest.raises(StreamEnded):
            while True:
                s.next_events(timeout=5)
        assert s.ended
        s.close()


def _heavy_report(i: int) -> dict[str, Any]:
    """A report that makes each orchestrator.status frame ~15 KB (fills buffers fast)."""
    return {"agents": [managed(f"m{i}-{k}", cwd="/srv/work/" + "x" * 40) for k in range(80)]}


def test_a_stalled_subscriber_is_cut_resumes_and_has_everything_and_slows_no_one(
    start: Start, connect: Connect, sse: Open
) -> None:
    relay = start(*NO_SEALS, "--sse-buffer", "65536", "--keepalive", "60")
    c = connect(relay)
    register_orchestrator(c, "o1")
    arrivals: dict[int, float] = {}
    fast = sse(relay)
    fast.next_events()
    stop = threading.Event()

    def read_fast() -> None:
        while not stop.is_set():
            try:
                for e in fast.next_events(timeout=1):
                    arrivals.setdefault(e.position, time.perf_counter())
            except TimeoutError:
                continue
            except (StreamEnded, OSError):
                return

    reader = threading.Thread(target=read_fast, daemon=True)
    reader.start()

    def write(n: int) -> tuple[float, list[float]]:
        sent: list[tuple[float, int]] = []
        t0 = time.perf_counter()
        for i in range(n):
            ts = time.perf_counter()
            assert c.patch("/api/orchestrators/o1/agents", _heavy_report(i)).status == 200
            sent.append((ts, c.log_head()))
        rate = n / (time.perf_counter() - t0)
        deadline = time.monotonic() + 10
        while any(p not in arrivals for _, p in sent) and time.monotonic() < deadline:
            time.sleep(0.01)  # the reader thread records arrivals; this only waits for it
        return rate, sorted(arrivals[p] - ts for ts, p in sent if p in arrivals)

    rate_alone, lat_alone = write(150)
    before_stall = c.log_head()
    stalled = sse(relay, {"since": str(before_stall)}, rcvbuf=4096)  # and never reads
    rate_stalled, lat_stalled = write(600)
    head = c.log_head()
    stop.set()
    reader.join(5)

    # The fast subscriber got every position, about as fast as without the stalled one.
    assert len(lat_alone) == 150 and len(lat_stalled) == 600
    median = lambda xs: xs[len(xs) // 2]  # noqa: E731
    assert median(lat_stalled) < 3 * median(lat_alone) + 0.05, (lat_alone[75], lat_stalled[300])
    assert rate_stalled > 0.5 * rate_alone, (rate_alone, rate_stalled)

    # The stalled one was ended (not left to buffer forever) before it had it all...
    got: list[Event] = []
    with pytest.raises(StreamEnded):
        while True:
            got.extend(stalled.next_events(timeout=10))
    assert not got or got[-1].position < head
    stalled.close()
    # ...and resuming from the last position it saw gives it the rest, once, in order.
    last = got[-1].position if got else before_stall
    with sse(relay, headers={"Last-Event-ID": str(last)}) as again:
        got.extend(again.read_until_position(head))
    assert [e.position for e in got] == list(range(before_stall + 1, head + 1))
    fast.close()


def test_a_client_that_leaves_is_forgotten_within_a_second(start: Start, connect: Connect, sse: Open) -> None:
    # With at most 3 streams per client address and a keep-alive far away, only
    # noticing departures lets a client that keeps reconnecting back in.
    relay: RelayProcess = start(*NO_SEALS, "--keepalive", "60", "--max-streams-per-client", "3")
    for _ in range(8):
        deadline = time.monotonic() + 5
        while True:
            s = sse(relay)
            if s.status == 200:
                break
            assert s.status == 429, s.body
            assert time.monotonic() < deadline, "a departed stream is still counted"
            time.sleep(0.05)  # then ask again, as the Retry-After tells a client to
        s.next_events()
        s.close()
    c = connect(relay)
    register_orchestrator(c, "o1")
    with sse(relay, {"since": "0"}) as s:
        assert [e.event for e in s.read_until_position(c.log_head())] == [
            "orchestrator.status",
            "agent.status",
        ]


def test_resumes_after_a_restart_start_from_anchors_kept_in_the_data_folder(
    start: Start, connect: Connect, sse: Open
) -> None:
    env = {"RELAY_REPLAY_EVERY": "3"}
    relay = start(*NO_SEALS, env=env)
    c = connect(relay)
    with sse(relay, {"since": "0"}) as live:
        scenario(c)
        head = c.log_head()
        everything = wire(live.read_until_position(head))
    data = relay.data_dir
    relay.stop()
    anchors = sorted((data / "anchors").glob("anchor-*.json"))
    assert 1 <= len(anchors) <= 4, anchors  # only the newest few are kept
    # An anchor that does not name the event at its position is not trusted.
    newest = anchors[-1]
    forged = orjson.loads(newest.read_bytes())
    forged["anchor"] = ["0" * 32, 1]
    forged["orchestrators"] = {}
    newest.write_bytes(orjson.dumps(forged))
    again = start(*NO_SEALS, env=env, data=data)
    for since in range(head):
        with sse(again, {"since": str(since)}) as s:
            assert wire(s.read_until_position(head)) == [x for x in everything if x[0] > since], since


def test_agent_scope_gets_its_record_and_its_messages(start: Start, connect: Connect, sse: Open) -> None:
    relay = start(*NO_SEALS)
    c = connect(relay)
    for aid in ("a1", "a2", "a3"):
        register_agent(c, aid)
    mine = sse(relay, {"agent": "a1"})
    messages_only = sse(relay, {"agent": "a1", "types": "message"})
    for s in (mine, messages_only):
        s.next_events()
    assert c.post("/api/messages", {"from": "a2", "to": "a1", "body": "to me"}).status == 201
    assert c.post("/api/messages", {"from": "a2", "to": "a3", "body": "not mine"}).status == 201
    assert c.post("/api/messages", {"from": "a1", "to": "a3", "body": "from me"}).status == 201
    c.post("/api/agents/a2/heartbeat")
    c.post("/api/agents/a1/heartbeat")
    head = c.log_head()
    got = mine.read_until_position(head)
    assert [e.event for e in got] == ["message.new", "message.new", "agent.status"]
    assert [e.json()["body"] for e in got[:2]] == ["to me", "from me"]
    assert got[2].json()["id"] == "a1"
    only = messages_only.read_until_position(got[1].position)
    assert [e.json()["body"] for e in only] == ["to me", "from me"]
    assert sse(relay, {"agent": "a1", "orchestrator": "o1"}).status == 400
