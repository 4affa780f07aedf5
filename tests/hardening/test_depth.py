"""Issue 17 (and 12): one nesting limit from the edge to every reader, and no lossy integers.

The attack: a body nested 251 levels deep was accepted (orjson reads 1,024
levels) and stored, but orjson writes at most 255, so every reader that wraps
it in a few levels more failed: reads 500, export stopped, checkpoints failed
and the relay could not start again. The edge now refuses it (ADR 0011); and a
log written before the limit still starts, streams, pages and exports, with
the too-deep part of that one event shown as a placeholder.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay import commands as c
from relay.application import RelayApp
from relay.audit.log import SqliteLog
from relay.audit.verify import verify
from relay.config import Settings
from relay.domain.errors import InvalidInputError
from relay.http.openapi import document
from relay.nesting import MAX_DEPTH, STORED_MAX_DEPTH, TOO_DEEP
from relay.projections.follower import CHECKPOINT_FILE
from relay.store import SQLITE_FILE, store_env
from relay.store.transcoder import OrjsonTranscoder, _default
from relay.writer import Writer
from tests.http.helpers import full_log, register_agent
from tests.sse.support import SseStream
from tests.support.client import Client
from tests.support.server import RelayProcess


def nested(levels: int, leaf: Any = "x") -> dict[str, Any]:
    """An object ``levels`` deep (``nested(1) == {"k": "x"}``)."""
    value: Any = leaf
    for _ in range(levels):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


def nested_text(levels: int) -> str:
    """``nested(levels)`` as JSON text, for depths no JSON library here will write."""
    return '{"k": ' * levels + '"x"' + "}" * levels


def post_raw(client: Client, path: str, text: str) -> Any:
    return client.post(path, body=text.encode(), headers={"Content-Type": "application/json"})


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# -- the edge ---------------------------------------------------------------------


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 251, 1_000])
def test_a_message_with_meta_nested_too_deep_is_refused_and_appends_nothing(
    client: Client, levels: int
) -> None:
    register_agent(client, "a1")
    register_agent(client, "a2")
    head = client.log_head()
    body = '{"from": "a1", "to": "a2", "body": "hi", "meta": ' + nested_text(levels) + "}"
    r = post_raw(client, "/api/messages", body)
    assert r.status == 400, r
    assert r.json["error"] == f"meta: is nested deeper than {MAX_DEPTH} levels"
    assert client.log_head() == head
    assert client.get("/api/messages").status == 200
    assert client.get("/api/agents/a2/inbox").status == 200


def test_registrations_with_meta_nested_too_deep_are_refused(client: Client) -> None:
    head = client.log_head()
    r = client.post("/api/agents", {"id": "deep", "meta": nested(251)})
    assert r.status == 400, r
    assert r.json["error"] == f"meta: is nested deeper than {MAX_DEPTH} levels"
    r = client.post(
        "/api/orchestrators",
        {"id": "o", "hostname": "h", "baseDir": "/srv/o", "meta": nested(MAX_DEPTH + 1)},
    )
    assert r.status == 400, r
    assert r.json["error"].startswith("meta: is nested deeper than")
    r = post_raw(client, "/api/agents", '{"id": "deep", "meta": [' + nested_text(2_000) + "]}")
    assert r.status == 400, r
    assert "nested deeper than" in r.json["error"]
    assert client.log_head() == head
    assert client.get("/api/agents").status == 200


def test_meta_at_the_limit_is_kept_and_every_reader_shows_it(client: Client) -> None:
    deepest = nested(MAX_DEPTH)
    register_agent(client, "a1", meta=deepest)
    register_agent(client, "a2")
    r = client.post("/api/messages", {"from": "a2", "to": "a1", "body": "b", "meta": deepest})
    assert r.status == 201, r
    assert client.get("/api/agents/a1").json["meta"] == deepest
    [msg] = client.get("/api/agents/a1/inbox").json
    assert msg["meta"] == deepest
    assert any(e["data"].get("meta") == deepest for e in full_log(client))


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ('{"n": 18446744073709551616}', "meta.n"),  # 2**64
        ('{"n": -9223372036854775809}', "meta.n"),  # -(2**63) - 1
        ('{"list": [1, {"big": 1' + "0" * 40 + '}]}', "meta.list[1].big"),
        ('{"n": ' + "9" * 5_000 + "}", "meta.n"),  # past Python's own int-parsing limit
    ],
)
def test_integers_beyond_64_bits_are_refused_not_turned_into_floats(
    client: Client, meta: str, field: str
) -> None:
    head = client.log_head()
    r = post_raw(client, "/api/agents", '{"id": "big", "meta": ' + meta + "}")
    assert r.status == 400, r
    assert r.json["error"].startswith(f"{field}: is an integer beyond 64 bits")
    assert client.log_head() == head


def test_integers_within_64_bits_are_kept_exactly(client: Client) -> None:
    meta = {"max": 2**64 - 1, "min": -(2**63), "digits": "12345678901234567890123", "f": 1e19}
    register_agent(client, "exact", meta=meta)
    assert client.get("/api/agents/exact").json["meta"] == meta


def test_the_schema_states_the_limit_on_free_form_objects() -> None:
    schemas = document()["components"]["schemas"]
    found = []
    for name in ("AgentRegistration", "OrchestratorRegistration", "MessageRequest"):
        meta = schemas[name]["properties"]["meta"]
        assert meta["x-maxDepth"] == MAX_DEPTH, name
        assert f"{MAX_DEPTH} levels" in meta["description"], name
        found.append(name)
    assert len(found) == 3


# -- a log written before the limit ---------------------------------------------------


class _LegacyTranscoder(OrjsonTranscoder):
    """Writes as the relay did before the limit: anything orjson can write."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


class _LegacyApp(RelayApp):
    name = "Relay"  # the library names a subclass after itself; the env keys use the name

    def construct_transcoder(self) -> OrjsonTranscoder:
        return _LegacyTranscoder()


DEEP = 252  # as deep as orjson could write inside an event; every reader wraps it further


def old_log_with_deep_events(data: Path) -> int:
    """A data folder whose log holds an agent and a message with meta ``DEEP`` levels deep."""
    app = _LegacyApp(store_env(Settings(data_dir=data)))
    at = 1_700_000_000_000
    cmds: list[Any] = [
        c.RegisterAgent("deep", "deep", None, [], None, [], nested(DEEP), at),
        c.RegisterAgent("plain", "plain", None, [], None, [], {}, at),
        c.SendMessage(
            "plain", "deep", "message", None, "hello", nested(DEEP), None,
            (c.Delivery("m-deep", "deep"),), at,
        ),
        c.HeartbeatAgent("plain", at + 1),
    ]
    for cmd in cmds:
        _, aggs = app.execute(cmd)
        app.save(*aggs)
    head = app.recorder.max_notification_id()
    app.close()
    assert head == len(cmds)
    return int(head)


def test_a_log_with_an_old_deep_event_starts_streams_pages_and_exports(tmp_path: Path) -> None:
    data = tmp_path / "data"
    head = old_log_with_deep_events(data)
    with RelayProcess(data) as relay:  # failed before the fix: TypeError in start-up
        cl = Client(relay.url)
        agents = {a["id"]: a for a in cl.get("/api/agents").json}
        assert set(agents) == {"deep", "plain"}
        shown = agents["deep"]["meta"]
        assert depth_of(shown) < STORED_MAX_DEPTH and TOO_DEEP in orjson.dumps(shown).decode()
        assert cl.get("/api/agents/deep").status == 200
        assert cl.get("/api/messages").status == 200
        [msg] = cl.get("/api/agents/deep/inbox").json
        assert msg["body"] == "hello"
        log = full_log(cl)
        assert [e["position"] for e in log] == list(range(1, head + 1))
        with SseStream(relay.url, {"since": "0"}) as s:
            got = s.read_until_position(head)
        assert {e.position for e in got} == set(range(1, head + 1))
        assert any(e.event == "message.new" for e in got)
        # the entity still takes writes, and the log stays whole
        assert cl.post("/api/agents/deep/heartbeat").status == 200
        assert cl.post("/api/agents", {"id": "deep", "meta": {"fixed": True}}).status == 201
        final = cl.log_head()  # our two writes, and whatever the relay seals beside them
        assert final >= head + 2
        cl.close()
    # the shutdown checkpoint was written and a second start uses it
    assert orjson.loads((data / CHECKPOINT_FILE).read_bytes())["position"] == final
    with RelayProcess(data) as relay:
        cl = Client(relay.url)
        assert cl.get("/api/agents/deep").json["meta"] == {"fixed": True}
        cl.close()
    out = subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), "export"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == final
    ver = subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), "verify"],
        capture_output=True, text=True, timeout=120,
    )
    assert ver.returncode == 0, ver.stdout + ver.stderr


# -- the write path: an event too deep to store fails its command alone -----------------


def run_batch(app: RelayApp, cmds: list[Any]) -> list[BaseException | None]:
    """The commands through a real ``Writer`` thread as one batch; each command's error."""
    loop = asyncio.new_event_loop()

    def deliver(recordings: list[Any]) -> None:
        writer.applied(recordings[-1].notification.id)  # as the follower does once applied

    writer = Writer(app, loop, deliver)
    futures = [writer.submit(cmd) for cmd in cmds]
    writer.start()
    writer.stop()  # takes the whole queue as one batch
    loop.run_until_complete(asyncio.sleep(0))
    errors = [f.exception() for f in futures]
    loop.close()
    return errors


@pytest.mark.parametrize("levels", [STORED_MAX_DEPTH, 300])
def test_an_event_too_deep_to_store_fails_alone_and_the_log_stays_whole(
    tmp_path: Path, levels: int
) -> None:
    """Issue 17's minimal case below the edge: register v; again with deep meta; heartbeat v."""
    data = tmp_path / "data"
    app = RelayApp(store_env(Settings(data_dir=data)))
    at = 1_700_000_000_000
    assert run_batch(app, [c.RegisterAgent("v", "v", None, [], None, [], {}, at)]) == [None]
    errors = run_batch(
        app,
        [
            c.RegisterAgent("v", "v", None, [], None, [], nested(levels), at + 1),
            c.HeartbeatAgent("v", at + 2),
            c.RegisterAgent("w", "w", None, [], None, [], {}, at + 3),
        ],
    )
    assert isinstance(errors[0], InvalidInputError), errors
    assert "cannot be recorded" in str(errors[0])
    assert errors[1:] == [None, None]
    assert run_batch(app, [c.HeartbeatAgent("v", at + 4)]) == [None]
    assert app.agent("v").meta == {} and app.agent("v").version == 3
    app.close()
    with SqliteLog(data / SQLITE_FILE) as log:
        report = verify(log, None, gapless=True)
        assert report.ok, report.problems
        assert report.events == 4
    again = RelayApp(store_env(Settings(data_dir=data)))
    assert run_batch(again, [c.HeartbeatAgent("v", at + 5), c.HeartbeatAgent("w", at + 5)]) == [
        None,
        None,
    ]
    again.close()


def test_a_stream_frame_that_cannot_be_encoded_is_sent_as_a_placeholder() -> None:
    """Below the limits, as a last guard: the position's frame still goes out."""
    from relay.http.sse import encode, state_blob
    from relay.projections.fold import Changed
    from relay.projections.readmodels import ReadModels

    [frame] = encode(7, [(Changed.AGENT, {"id": "deep", "meta": nested(300)})])
    assert frame.data.startswith(b"id: 7\nevent: agent.status\ndata: ")
    data = orjson.loads(frame.data.split(b"data: ", 1)[1])
    assert data["id"] == "deep" and "cannot be shown" in data["error"]
    rm = ReadModels()
    rm.agents["deep"] = {"id": "deep", "meta": nested(300)}
    assert state_blob(rm) is None
