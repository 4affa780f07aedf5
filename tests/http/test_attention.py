"""Needs-input as a fact in the log, and answering it (issue 16, ADR 0032, 0033), over a socket.

The relay runs in this process (tests/property/inprocess.py) so the test holds
the clock; the HTTP stack, the writer and the read models are the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from relay.clock import FakeClock
from relay.projections.readmodels import ReadModels
from tests.http.helpers import full_log, managed, register_orchestrator
from tests.property.inprocess import InProcessRelay
from tests.sse.support import Event, SseStream
from tests.support.client import Client

T0 = 1_700_000_000_000
ATTENTION = "/api/orchestrators/o1/agents/m1/attention"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[InProcessRelay]:
    with InProcessRelay(tmp_path / "data", FakeClock(T0), reap_every=3600.0) as r:
        yield r


@pytest.fixture
def client(relay: InProcessRelay) -> Iterator[Client]:
    c = Client(relay.url)
    register_orchestrator(c, "o1")
    assert c.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1"), managed("m2")]}).status == 200
    yield c
    c.close()


def refused(client: Client, status: int, method: str, path: str, body: Any, *words: str) -> None:
    head = client.log_head()
    r = client.request(method, path, json=body)
    assert r.status == status, r
    for word in words:
        assert word in r.json["error"], (word, r.json)
    assert client.log_head() == head


def queue(client: Client, attention: str = "input") -> list[tuple[str, Any, Any]]:
    return [
        (m["agentId"], m["attentionReason"], m["attentionExcerpt"])
        for m in client.get(f"/api/managed-agents?attention={attention}").json
    ]


def until_attention(stream: SseStream) -> list[Event]:
    """Events up to the first ``orchestrator.attention`` (the filtered stream skips the rest)."""
    deadline = time.monotonic() + 10
    out: list[Event] = []
    while not any(e.event == "orchestrator.attention" for e in out):
        assert time.monotonic() < deadline, f"no orchestrator.attention; got {out}"
        out.extend(stream.next_events(deadline - time.monotonic()))
    return out


def _schema(client: Client, name: str) -> dict[str, Any]:
    doc = client.get("/api/openapi.json").json
    return {**doc["components"]["schemas"][name], "components": doc["components"]}


def test_a_report_is_a_fact_and_a_repeat_records_nothing(client: Client) -> None:
    assert queue(client) == []
    body = {"attention": "input", "reason": "no output for 30s; matches Proceed\\?",
            "excerpt": "Deleting 3 files.\nProceed? [y/N]"}
    r = client.post(ATTENTION, body)
    assert r.status == 200, r
    assert r.json["recorded"] is True
    agent = r.json["managedAgent"]
    assert (agent["attention"], agent["attentionSince"], agent["orchestratorId"]) == ("input", T0, "o1")
    jsonschema_rs.validate(agent, _schema(client, "ManagedAgentListing"))
    assert queue(client) == [("m1", body["reason"], body["excerpt"])]
    assert queue(client, "idle") == []
    head = client.log_head()
    again = client.post(ATTENTION, body)
    assert again.status == 200 and again.json["recorded"] is False
    assert client.log_head() == head  # idempotent: the host's retries are not news

    # Both places the dashboard reads agree.
    m1 = client.get("/api/orchestrators/o1").json["managedAgents"][0]
    assert m1["attention"] == "input" and m1["attentionExcerpt"] == body["excerpt"]

    r = client.post(ATTENTION, {"attention": None, "reason": "output"})
    assert r.json["recorded"] is True and r.json["managedAgent"]["attention"] is None
    assert queue(client) == []
    assert [e["type"] for e in full_log(client)][-2:] == ["AgentAwaitingInput", "AgentInputResumed"]
    assert full_log(client)[-1]["data"] == {"agentId": "m1", "reason": "output", "at": T0, "commandId": None}


def test_attention_survives_reports_until_the_agent_is_gone(client: Client) -> None:
    client.post(ATTENTION, {"attention": "idle", "reason": "no output for 30s"})
    client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1", pid=7), managed("m2")]})
    assert queue(client, "idle") == [("m1", "no output for 30s", "")]
    client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m2")]})
    assert queue(client, "idle") == []


def test_bad_reports_are_400_and_unknown_agents_404(client: Client) -> None:
    refused(client, 400, "POST", ATTENTION, {}, "attention: is required")
    refused(client, 400, "POST", ATTENTION, {"attention": "maybe"}, "attention: must be one of")
    refused(client, 400, "POST", ATTENTION, {"attention": "input", "excerpt": "x" * 2001}, "excerpt")
    refused(client, 400, "POST", ATTENTION, {"attention": "input", "excerpt": "\x1b[2J"}, "excerpt",
            "U+001B")
    refused(client, 404, "POST", "/api/orchestrators/o1/agents/ghost/attention",
            {"attention": "input"}, "ghost")
    refused(client, 404, "POST", "/api/orchestrators/nope/agents/m1/attention",
            {"attention": "input"}, "nope")


def test_a_host_token_reports_only_for_itself(relay: InProcessRelay, client: Client) -> None:
    token = register_orchestrator(client, "o1").json["orchestratorToken"]
    other = register_orchestrator(client, "o2").json["orchestratorToken"]
    client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m1")]})
    own = Client(relay.url, token)
    foreign = Client(relay.url, other)
    try:
        assert own.post(ATTENTION, {"attention": "input"}).status == 200
        assert foreign.post(ATTENTION, {"attention": None}).status == 403
        # ... and it cannot answer an agent: typing into agents is the admin's.
        r = own.post("/api/orchestrators/o1/actions", {"action": "input", "agentId": "m1", "text": "y"})
        assert r.status == 403
    finally:
        own.close()
        foreign.close()


def test_input_is_a_command_whose_text_is_in_the_log(client: Client) -> None:
    text = "$(reboot) C-c 'single' \"double\" é 漢 🙂\ttab"
    r = client.post("/api/orchestrators/o1/actions", {"action": "input", "agentId": "m1", "text": text})
    assert r.status == 202, r
    cmd = r.json["command"]
    assert (r.json["action"], cmd["kind"], cmd["agentId"], cmd["text"], cmd["enter"]) == (
        "input", "input", "m1", text, True
    )
    jsonschema_rs.validate(cmd, _schema(client, "Command"))
    assert cmd["requestedBy"] == "operator"
    pending = client.get("/api/orchestrators/o1/commands?status=pending").json
    assert [c["id"] for c in pending] == [cmd["id"]]
    logged = [e for e in full_log(client) if e["type"] == "InputRequested"]
    assert [(e["data"]["text"], e["data"]["agentId"], e["data"]["requestedBy"]) for e in logged] == [
        (text, "m1", "operator")
    ]
    r = client.post("/api/orchestrators/o1/actions",
                    {"action": "input", "agentId": "m2", "text": "", "enter": True})
    assert r.status == 202 and r.json["command"]["text"] == ""
    r = client.post("/api/orchestrators/o1/actions",
                    {"action": "input", "agentId": "m2", "text": "no enter", "enter": False})
    assert r.status == 202 and r.json["command"]["enter"] is False


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"agentId": "m1"}, 400, ("text: is required",)),
        ({"agentId": "m1", "text": 5}, 400, ("text",)),
        ({"agentId": "m1", "text": "x" * 4001}, 400, ("text: must be at most 4000",)),
        ({"agentId": "m1", "text": "\x03"}, 400, ("text", "U+0003")),
        ({"agentId": "m1", "text": "a\x1b[A"}, 400, ("text", "U+001B")),
        ({"agentId": "m1", "text": "", "enter": False}, 400, ("nothing to type",)),
        ({"agentId": "m1", "text": "y", "enter": "yes"}, 400, ("enter",)),
        ({"text": "y"}, 400, ("agentId",)),
        ({"agentId": "ghost", "text": "y"}, 404, ("ghost",)),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    client: Client, body: dict[str, Any], status: int, words: tuple[str, ...]
) -> None:
    refused(client, status, "POST", "/api/orchestrators/o1/actions", {"action": "input", **body}, *words)


def test_the_schema_and_the_relay_agree_on_input(client: Client) -> None:
    doc = client.get("/api/openapi.json").json
    post = doc["paths"]["/api/orchestrators/{id}/actions"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**body, "components": doc["components"]})
    for body in (
        {"action": "input", "agentId": "m1", "text": "y"},
        {"action": "input", "agentId": "m1", "text": ""},
        {"action": "input", "agentId": "m1", "text": "", "enter": False},
        {"action": "input", "agentId": "m1", "text": "a\tb\nc"},
        {"action": "input", "agentId": "m1", "text": "\x07"},
        {"action": "input", "agentId": "m1"},
        {"action": "restart", "agentId": "m1"},
        {"action": "reboot"},
    ):
        status = client.post("/api/orchestrators/o1/actions", body).status
        assert status in (202, 400), (body, status)
        assert (status == 202) == validator.is_valid(body), (body, status)


def test_a_done_answer_clears_attention_and_the_stream_says_so(
    relay: InProcessRelay, client: Client
) -> None:
    client.post(ATTENTION, {"attention": "input", "reason": "q", "excerpt": "Proceed? [y/N]"})
    head = client.log_head()
    with SseStream(relay.url, {"orchestrator": "o1", "since": str(head)}) as stream:
        cid = client.post("/api/orchestrators/o1/actions",
                          {"action": "input", "agentId": "m1", "text": "y"}).json["command"]["id"]
        assert queue(client) != []  # asked, not yet typed: it still waits
        r = client.post(f"/api/orchestrators/o1/commands/{cid}/result", {"status": "done"})
        assert r.status == 200
        assert queue(client) == []
        events = until_attention(stream)
    attention = [e.json() for e in events if e.event == "orchestrator.attention"]
    assert [(a["agentId"], a["attention"], a["orchestratorId"]) for a in attention] == [
        ("m1", None, "o1")
    ]
    # One transaction: the result, the resume it implies, and the command's control message settled.
    *_, result, resumed, settled = full_log(client)
    assert (result["type"], resumed["type"], settled["type"]) == (
        "CommandResultRecorded", "AgentInputResumed", "MessageAcked"
    )
    assert resumed["data"] == {"agentId": "m1", "reason": "input sent", "at": T0, "commandId": cid}


def test_the_stream_tells_the_dashboard_who_waits(relay: InProcessRelay, client: Client) -> None:
    head = client.log_head()
    with SseStream(relay.url, {"types": "orchestrator", "since": str(head)}) as stream:
        client.post(ATTENTION, {"attention": "input", "reason": "permission_prompt: Bash",
                                "excerpt": "Allow? [y/N]"})
        events = stream.read_until_position(client.log_head())
    names = [e.event for e in events]
    assert names == ["orchestrator.status", "orchestrator.attention"]
    data = events[-1].json()
    assert {k: data[k] for k in ("orchestratorId", "hostname", "agentId", "attention",
                                 "attentionReason", "attentionExcerpt", "attentionSince")} == {
        "orchestratorId": "o1", "hostname": "host-o1", "agentId": "m1", "attention": "input",
        "attentionReason": "permission_prompt: Bash", "attentionExcerpt": "Allow? [y/N]",
        "attentionSince": T0,
    }


def test_replay_from_zero_gives_the_same_read_models(relay: InProcessRelay, client: Client) -> None:
    client.post(ATTENTION, {"attention": "input", "reason": "q", "excerpt": "e"})
    client.post("/api/orchestrators/o1/agents/m2/attention", {"attention": "idle", "reason": "i"})
    cid = client.post("/api/orchestrators/o1/actions",
                      {"action": "input", "agentId": "m1", "text": "y"}).json["command"]["id"]
    client.post(f"/api/orchestrators/o1/commands/{cid}/result", {"status": "done"})
    client.patch("/api/orchestrators/o1/agents", {"agents": [managed("m2"), managed("m3")]})
    app = relay.service.app
    assert app is not None
    rebuilt = ReadModels()
    for n in app.recorder.select_notifications(start=1, limit=1_000_000):
        rebuilt.apply(n.id, app.mapper.to_domain_event(n))
    live = relay.service.rm
    assert rebuilt.comparable() == live.comparable()
    assert ReadModels.from_state(live.to_state()).comparable() == live.comparable()
    assert queue(client, "idle") == [("m2", "i", "")]
