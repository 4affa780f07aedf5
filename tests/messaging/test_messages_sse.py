"""Message events on the live stream, and ``?agent=<id>`` narrowing it to one inbox."""

from __future__ import annotations

from tests.sse.support import SseStream
from tests.support.client import Client
from tests.support.server import RelayProcess


def test_message_events_and_the_agent_scope(relay: RelayProcess, client: Client) -> None:
    c = client
    for aid in ("a", "b", "x"):
        assert c.post("/api/agents", {"id": aid, "tags": ["t"]}).status == 201
    everything = SseStream(relay.url)
    only_b = SseStream(relay.url, {"agent": "b"})
    messages = SseStream(relay.url, {"types": "message"})
    try:
        for s in (everything, only_b, messages):
            s.next_events()  # the opening chunk (retry:)
        m = c.post("/api/messages", {"from": "a", "to": "b", "body": "for b"}).json
        other = c.post("/api/messages", {"from": "a", "to": "x", "body": "not for b"}).json
        c1 = c.post(f"/api/messages/{m['id']}/claim", {"agentId": "b"}).json
        c.post(f"/api/messages/{m['id']}/release", {"agentId": "b", "claimId": c1["claimId"]})
        c.post(f"/api/messages/{m['id']}/claim", {"agentId": "b"})
        c.post(f"/api/messages/{m['id']}/ack", {"agentId": "b"})
        c.delete(f"/api/messages/{other['id']}")
        c.post("/api/messages", {"from": "b", "to": "a", "body": "reply"})
        c.post("/api/agents/b/heartbeat")
        head = c.log_head()

        got_b = [(e.event, e.json().get("id")) for e in only_b.read_until_position(head)]
        assert got_b[:5] == [
            ("message.new", m["id"]),
            ("message.claimed", m["id"]),
            ("message.claim_released", m["id"]),
            ("message.claimed", m["id"]),
            ("message.acked", m["id"]),
        ]
        assert [name for name, _ in got_b[5:]] == ["message.new", "agent.status"]
        assert other["id"] not in {i for _, i in got_b}

        got_all = everything.read_until_position(head)
        names = [e.event for e in got_all]
        assert names.count("message.new") == 3 and "message.deleted" in names
        released = next(e for e in got_all if e.event == "message.claim_released").json()
        assert released["status"] == "pending" and released["lastRelease"]["reason"] == "released"
        acked = next(e for e in got_all if e.event == "message.acked").json()
        assert acked == c.get(f"/api/messages/{m['id']}").json

        got_messages = messages.read_until_position(head - 1)  # the heartbeat is not a message
        assert {e.event.split(".")[0] for e in got_messages} == {"message"}
        assert len(got_messages) == len([n for n in names if n.startswith("message.")])
    finally:
        for s in (everything, only_b, messages):
            s.close()
