"""Every messaging endpoint and rejection over a real socket (ADR 0010).

Each rejection must name its problem and append nothing to the log; each
accepted write must be in the log and the read models when it is answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.http.helpers import full_log, register_orchestrator
from tests.support.client import Client, Response
from tests.support.server import RelayProcess


def agent(api: Client, aid: str, **over: Any) -> None:
    r = api.post("/api/agents", {"id": aid, **over})
    assert r.status == 201, r


def send(api: Client, sender: str, to: str, body: str = "hello", **over: Any) -> dict[str, Any]:
    r = api.post("/api/messages", {"from": sender, "to": to, "body": body, **over})
    assert r.status == 201, r
    return dict(r.json)


def claim(api: Client, mid: str, aid: str, lease: float = 60) -> Response:
    return api.post(f"/api/messages/{mid}/claim", {"agentId": aid, "leaseSeconds": lease})


def rejected(api: Client, call: Callable[[], Response], status: int, mention: str) -> None:
    head = api.log_head()
    r = call()
    assert r.status == status, r
    assert set(r.json) == {"error"}, r.json
    assert mention.lower() in r.json["error"].lower(), r.json
    assert api.log_head() == head, "a rejected request appended to the log"


def log_of(api: Client, mid: str) -> list[str]:
    return [e["type"] for e in full_log(api) if e["entityKind"] == "message" and e["entityId"] == mid]


# -- sending ------------------------------------------------------------------------------


def test_send_direct_is_durable_visible_and_explained_by_the_log(api: Client, uniq: str) -> None:
    a, b = uniq + "a", uniq + "b"
    agent(api, a)
    agent(api, b)
    head = api.log_head()
    m = send(api, a, b, "do the thing", subject="task", meta={"priority": "normal", "delivery": {"x": 1}})
    assert api.log_head() == head + 1
    assert m["from"] == a and m["to"] == b and m["recipient"] == b
    assert (m["type"], m["status"], m["subject"], m["body"]) == ("message", "pending", "task", "do the thing")
    assert m["meta"] == {"priority": "normal", "delivery": {"x": 1}}
    assert m["seq"] == head + 1 and m["broadcastId"] is None and isinstance(m["createdAt"], int)
    assert api.get(f"/api/messages/{m['id']}").json == m
    assert [x["id"] for x in api.get(f"/api/agents/{b}/inbox").json] == [m["id"]]
    assert api.get(f"/api/agents/{a}/inbox").json == []
    assert log_of(api, m["id"]) == ["MessageSent"]


@pytest.mark.parametrize(
    ("body", "status", "mention"),
    [
        ({"to": "X", "body": "b"}, 400, "from"),
        ({"from": "a/b", "to": "X", "body": "b"}, 400, "from"),
        ({"from": "F", "body": "b"}, 400, "to"),
        ({"from": "F", "to": 7, "body": "b"}, 400, "to"),
        ({"from": "F", "to": "a b", "body": "b"}, 400, "to"),
        ({"from": "F", "to": "tag:", "body": "b"}, 400, "to"),
        ({"from": "F", "to": "label:", "body": "b"}, 400, "to"),
        ({"from": "F", "to": "X"}, 400, "body"),
        ({"from": "F", "to": "X", "body": 5}, 400, "body"),
        ({"from": "F", "to": "X", "body": "b", "type": "note"}, 400, "type"),
        ({"from": "F", "to": "X", "body": "b", "subject": 1}, 400, "subject"),
        ({"from": "F", "to": "X", "body": "b", "subject": "s" * 1001}, 400, "subject"),
        ({"from": "F", "to": "X", "body": "b", "meta": []}, 400, "meta"),
        ({"from": "F", "to": "X", "body": "b", "meta": {"priority": "high"}}, 400, "meta.priority"),
        (
            {"from": "F", "to": "X", "body": "b", "meta": {"orchestratorControl": {}}},
            400,
            "orchestratorControl",
        ),
        ({"from": "F", "to": "nobody-here", "body": "b"}, 404, "nobody-here"),
        ({"from": "F", "to": "tag:no-such-tag", "body": "b"}, 404, "tag:no-such-tag"),
        ({"from": "F", "to": "label:no-such-label", "body": "b"}, 404, "label:no-such-label"),
    ],
)
def test_send_rejections(api: Client, uniq: str, body: dict[str, Any], status: int, mention: str) -> None:
    agent(api, uniq + "X")
    body = {k: (uniq + v if k in ("to", "from") and v in ("X", "F") else v) for k, v in body.items()}
    rejected(api, lambda: api.post("/api/messages", body), status, mention)


def test_send_needs_a_json_body(api: Client) -> None:
    rejected(
        api,
        lambda: api.post("/api/messages", body=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "json",
    )
    rejected(
        api,
        lambda: api.post("/api/messages", body=b"{", headers={"Content-Type": "application/json"}),
        400,
        "json",
    )


def test_message_targets_are_not_agent_ids(api: Client) -> None:
    for aid in ("*", "tag:x", "label:y"):
        rejected(api, lambda aid=aid: api.post("/api/agents", {"id": aid}), 400, "message targets")


# -- broadcasts ------------------------------------------------------------------------------


def test_broadcast_by_tag_and_label_is_one_independent_copy_per_recipient(api: Client, uniq: str) -> None:
    sender, a, b, c, other = (uniq + s for s in ("s", "a", "b", "c", "other"))
    team = uniq + "team"
    agent(api, sender, tags=[team], label=team)
    agent(api, a, tags=[team], label=team)
    agent(api, b, tags=[team, "x"], label=team)
    agent(api, c, tags=[team])
    agent(api, other, tags=["elsewhere"])
    head = api.log_head()
    sent = send(api, sender, f"tag:{team}", "all hands", meta={"priority": "urgent"})
    assert api.log_head() == head + 4, "the content once, one delivery per recipient but the sender"
    assert sent["recipients"] == sorted([a, b, c]) and sent["to"] == f"tag:{team}"
    assert sent["recipientCount"] == 3 and sent["body"] == "all hands" and sent["priority"] == "urgent"
    pairs = zip(sent["recipients"], sent["messageIds"], strict=True)
    copies = {r: api.get(f"/api/messages/{i}").json for r, i in pairs}
    assert len({m["id"] for m in copies.values()}) == 3
    assert all(m["broadcastId"] == sent["broadcastId"] == sent["id"] for m in copies.values())
    assert all(m["body"] == "all hands" and m["priority"] == "urgent" for m in copies.values())
    assert {r for r, m in copies.items() if m["recipient"] == r} == {a, b, c}
    listed = api.get(f"/api/messages?broadcastId={sent['broadcastId']}").json["messages"]
    assert sorted(m["recipient"] for m in listed) == sorted([a, b, c])

    # each copy is claimed and acked on its own
    assert claim(api, copies[a]["id"], a).status == 200
    assert claim(api, copies[b]["id"], b).status == 200
    assert api.post(f"/api/messages/{copies[a]['id']}/ack", {"agentId": a}).json["status"] == "acked"
    assert api.get(f"/api/messages/{copies[b]['id']}").json["status"] == "claimed"
    assert api.get(f"/api/messages/{copies[c]['id']}").json["status"] == "pending"
    assert api.get(f"/api/agents/{a}/inbox").json == []
    assert [m["id"] for m in api.get(f"/api/agents/{c}/inbox").json] == [copies[c]["id"]]
    assert api.get(f"/api/agents/{other}/inbox").json == []

    by_label = send(api, a, f"label:{team}", "label")
    assert by_label["recipients"] == sorted([sender, b])


def test_broadcast_to_everyone_includes_offline_agents_and_orchestrators(client: Client) -> None:
    agent(client, "s")
    agent(client, "a")
    agent(client, "gone")
    assert client.delete("/api/agents/gone").status == 200
    register_orchestrator(client, "o1")
    sent = send(client, "s", "*", "everyone")
    assert sent["recipients"] == ["a", "orchestrator-o1"]
    rejected(
        client, lambda: client.post("/api/messages", {"from": "x", "to": "gone", "body": "b"}), 404, "gone"
    )


# -- inbox ---------------------------------------------------------------------------------------


def test_inbox_is_urgent_first_then_oldest_and_hides_what_is_done(api: Client, uniq: str) -> None:
    a, b = uniq + "a", uniq + "b"
    agent(api, a)
    agent(api, b)
    n1 = send(api, a, b, "1")
    u1 = send(api, a, b, "2", meta={"priority": "urgent"})
    n2 = send(api, a, b, "3")
    u2 = send(api, a, b, "4", meta={"priority": "urgent"}, type="system")
    done = send(api, a, b, "5")
    gone = send(api, a, b, "6")
    assert claim(api, done["id"], b).status == 200
    assert api.post(f"/api/messages/{done['id']}/ack", {"agentId": b}).status == 200
    assert api.delete(f"/api/messages/{gone['id']}").json == {"ok": True}
    assert claim(api, n2["id"], b).status == 200  # claimed by me: still in my inbox
    inbox = api.get(f"/api/agents/{b}/inbox").json
    assert [m["id"] for m in inbox] == [u1["id"], u2["id"], n1["id"], n2["id"]]
    assert inbox[3]["status"] == "claimed" and inbox[3]["claimedBy"] == b
    assert [m["id"] for m in api.get(f"/api/agents/{b}/inbox?limit=1").json] == [u1["id"]]
    rejected(api, lambda: api.get(f"/api/agents/{uniq}nobody/inbox"), 404, "nobody")
    rejected(api, lambda: api.get(f"/api/agents/{b}/inbox?limit=0"), 400, "limit")


# -- claims, acks, releases ------------------------------------------------------------------------


def test_claim_ack_release_and_every_conflict(api: Client, uniq: str) -> None:
    a, b = uniq + "a", uniq + "b"
    agent(api, a)
    agent(api, b)
    m = send(api, a, b)
    mid = m["id"]
    ack = f"/api/messages/{mid}/ack"
    rel = f"/api/messages/{mid}/release"
    rejected(api, lambda: api.post(ack, {"agentId": b}), 409, "not claimed")
    rejected(api, lambda: api.post(rel, {"agentId": b}), 409, "not claimed")
    rejected(api, lambda: claim(api, mid, a), 409, f"only '{b}' may claim")

    c1 = claim(api, mid, b, lease=30)
    assert c1.status == 200, c1
    assert c1.json["status"] == "claimed" and c1.json["claimedBy"] == b and c1.json["claims"] == 1
    assert c1.json["leaseUntil"] == c1.json["claimedAt"] + 30_000
    rejected(api, lambda: claim(api, mid, b), 409, "already claimed")
    rejected(api, lambda: api.post(ack, {"agentId": a}), 409, "not held")
    rejected(api, lambda: api.post(ack, {"agentId": b, "claimId": "other"}), 409, "not held")

    r = api.post(rel, {"agentId": b, "claimId": c1.json["claimId"]})
    assert r.status == 200 and r.json["status"] == "pending" and r.json["claimId"] is None
    assert r.json["lastRelease"]["reason"] == "released"
    rejected(api, lambda: api.post(ack, {"agentId": b, "claimId": c1.json["claimId"]}), 409, "not claimed")

    c2 = claim(api, mid, b).json
    rejected(api, lambda: api.post(ack, {"agentId": b, "claimId": c1.json["claimId"]}), 409, "not held")
    done = api.post(ack, {"agentId": b, "claimId": c2["claimId"]})
    assert done.status == 200 and done.json["status"] == "acked" and done.json["ackedBy"] == b
    rejected(api, lambda: api.post(ack, {"agentId": b}), 409, "already acked")
    rejected(api, lambda: claim(api, mid, b), 409, "already acked")
    assert log_of(api, mid) == [
        "MessageSent",
        "MessageClaimed",
        "MessageClaimReleased",
        "MessageClaimed",
        "MessageAcked",
    ]


@pytest.mark.parametrize(
    ("path", "body", "mention"),
    [
        ("claim", {}, "agentId"),
        ("claim", {"agentId": "a b"}, "agentId"),
        ("claim", {"agentId": "x", "leaseSeconds": 0}, "leaseSeconds"),
        ("claim", {"agentId": "x", "leaseSeconds": -1}, "leaseSeconds"),
        ("claim", {"agentId": "x", "leaseSeconds": 86_401}, "leaseSeconds"),
        ("claim", {"agentId": "x", "leaseSeconds": "10"}, "leaseSeconds"),
        ("claim", {"agentId": "x", "leaseSeconds": True}, "leaseSeconds"),
        ("ack", {}, "agentId"),
        ("ack", {"agentId": "x", "claimId": 3}, "claimId"),
        ("release", {"agentId": 1}, "agentId"),
    ],
)
def test_claim_ack_release_body_rejections(
    api: Client, uniq: str, path: str, body: dict[str, Any], mention: str
) -> None:
    agent(api, uniq + "a")
    m = send(api, uniq + "a", uniq + "a")
    rejected(api, lambda: api.post(f"/api/messages/{m['id']}/{path}", body), 400, mention)


def test_unknown_messages_are_404_everywhere(api: Client) -> None:
    for call in (
        lambda: api.get("/api/messages/nope"),
        lambda: api.delete("/api/messages/nope"),
        lambda: api.post("/api/messages/nope/claim", {"agentId": "a"}),
        lambda: api.post("/api/messages/nope/ack", {"agentId": "a"}),
        lambda: api.post("/api/messages/nope/release", {"agentId": "a"}),
    ):
        rejected(api, call, 404, "no message 'nope'")


def test_delete_ends_everything_but_the_record(api: Client, uniq: str) -> None:
    a = uniq + "a"
    agent(api, a)
    m = send(api, a, a)
    assert claim(api, m["id"], a).status == 200
    assert api.delete(f"/api/messages/{m['id']}").json == {"ok": True}
    shown = api.get(f"/api/messages/{m['id']}").json
    assert shown["status"] == "deleted" and shown["claimId"] is None and shown["deletedBy"] == "operator"
    assert api.get(f"/api/agents/{a}/inbox").json == []
    for call in (
        lambda: api.delete(f"/api/messages/{m['id']}"),
        lambda: claim(api, m["id"], a),
        lambda: api.post(f"/api/messages/{m['id']}/ack", {"agentId": a}),
        lambda: api.post(f"/api/messages/{m['id']}/release", {"agentId": a}),
    ):
        rejected(api, call, 409, "deleted")


# -- leases and the reaper ---------------------------------------------------------------------------


def reap_until_released(api: Client, mid: str, deadline_s: float = 10.0) -> list[str]:
    """Reap until ``mid`` is released (polling a condition with a deadline, never a fixed sleep)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        released: list[str] = api.post("/api/system/reap").json["releasedMessageIds"]
        if mid in released:
            return released
    raise AssertionError(f"message {mid} was not released within {deadline_s} s")


def test_an_expired_claim_is_released_once_and_a_late_ack_is_409(api: Client, uniq: str) -> None:
    a = uniq + "a"
    agent(api, a)
    m = send(api, a, a)
    c1 = claim(api, m["id"], a, lease=0.2).json
    reap_until_released(api, m["id"])
    shown = api.get(f"/api/messages/{m['id']}").json
    assert shown["status"] == "pending"
    assert shown["lastRelease"]["reason"] == "expired" and shown["lastRelease"]["at"] > c1["leaseUntil"]
    assert m["id"] not in api.post("/api/system/reap").json["releasedMessageIds"]
    c2 = claim(api, m["id"], a).json
    rejected(
        api,
        lambda: api.post(f"/api/messages/{m['id']}/ack", {"agentId": a, "claimId": c1["claimId"]}),
        409,
        "not held",
    )
    assert api.post(f"/api/messages/{m['id']}/ack", {"agentId": a, "claimId": c2["claimId"]}).status == 200
    assert log_of(api, m["id"]) == [
        "MessageSent",
        "MessageClaimed",
        "MessageClaimExpired",
        "MessageClaimed",
        "MessageAcked",
    ]


def test_a_claim_after_the_lease_takes_over_without_the_reaper(api: Client, uniq: str) -> None:
    a = uniq + "a"
    agent(api, a)
    m = send(api, a, a)
    c1 = claim(api, m["id"], a, lease=0.05).json
    deadline = time.monotonic() + 10
    while True:  # poll until the relay's clock is past the lease (it is the judge)
        r = claim(api, m["id"], a)
        if r.status == 200:
            break
        assert r.status == 409 and time.monotonic() < deadline, r
    assert r.json["claimId"] != c1["claimId"] and r.json["claims"] == 2
    assert log_of(api, m["id"]) == ["MessageSent", "MessageClaimed", "MessageClaimExpired", "MessageClaimed"]
    assert m["id"] not in api.post("/api/system/reap").json["releasedMessageIds"]


# -- listing -------------------------------------------------------------------------------------------


def test_list_filters_and_pages(api: Client, uniq: str) -> None:
    a, b = uniq + "a", uniq + "b"
    agent(api, a)
    agent(api, b)
    sent = [send(api, a, b, str(i)) for i in range(5)] + [send(api, b, a, "back", type="system")]
    assert claim(api, sent[0]["id"], b).status == 200
    mine = api.get(f"/api/messages?from={a}").json
    assert [m["id"] for m in mine["messages"]] == [m["id"] for m in sent[:5]] and mine["next"] is None
    assert [m["id"] for m in api.get(f"/api/messages?to={a}").json["messages"]] == [sent[5]["id"]]
    assert [m["id"] for m in api.get(f"/api/messages?to={b}&status=claimed").json["messages"]] == [
        sent[0]["id"]
    ]
    assert [m["id"] for m in api.get(f"/api/messages?from={b}&type=system").json["messages"]] == [
        sent[5]["id"]
    ]
    pages, after = [], 0
    while True:
        page = api.get(f"/api/messages?to={b}&limit=2&after={after}").json
        pages.append([m["id"] for m in page["messages"]])
        if page["next"] is None:
            break
        after = page["next"]
    ids = [m["id"] for m in sent[:5]]
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    for query, mention in [
        ("status=done", "status"),
        ("type=x", "type"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
        ("from=a%20b", "from"),
        ("from=", "from"),
        ("to=", "to"),
        ("to=tag:", "to"),
        ("broadcastId=x&broadcastId=y", "broadcastId"),
    ]:
        rejected(api, lambda query=query: api.get(f"/api/messages?{query}"), 400, mention)


# -- orchestrator control messages ------------------------------------------------------------------------


def test_spawn_and_actions_arrive_as_urgent_system_messages_in_one_transaction(
    api: Client, uniq: str
) -> None:
    oid = uniq + "o"
    register_orchestrator(api, oid, baseDir="/srv/work")
    inbox = f"/api/agents/orchestrator-{oid}/inbox"
    head = api.log_head()
    spawn = api.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude", "cwd": "repo", "prompt": "go"})
    assert spawn.status == 202, spawn
    cmd = spawn.json["command"]
    log = full_log(api)[-2:]
    assert [e["type"] for e in log] == ["SpawnRequested", "MessageSent"]
    assert [e["position"] for e in log] == [head + 1, head + 2]
    act = api.post(f"/api/orchestrators/{oid}/actions", {"action": "restart"})
    assert act.status == 202
    msgs = api.get(inbox).json
    assert [m["id"] for m in msgs] == [cmd["id"], act.json["command"]["id"]]
    m = msgs[0]
    assert (m["type"], m["priority"], m["to"], m["from"]) == (
        "system",
        "urgent",
        f"orchestrator-{oid}",
        "operator",
    )
    control = m["meta"]["orchestratorControl"]
    assert control == {
        "action": "spawn",
        "commandId": cmd["id"],
        "provider": "claude",
        "cwd": "/srv/work/repo",
        "label": None,
        "approvalMode": "guarded",
        "prompt": "go",
        "requestedBy": "operator",
        "requestedAt": cmd["requestedAt"],
    }
    assert msgs[1]["meta"]["orchestratorControl"]["action"] == "restart"
    assert msgs[1]["meta"]["orchestratorControl"]["agentId"] is None
    # the orchestrator works its inbox like any agent
    c = claim(api, m["id"], f"orchestrator-{oid}").json
    assert (
        api.post(
            f"/api/messages/{m['id']}/ack", {"agentId": f"orchestrator-{oid}", "claimId": c["claimId"]}
        ).status
        == 200
    )
    # a refused spawn records neither the command nor the message
    rejected(
        api,
        lambda: api.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude", "cwd": "/etc"}),
        400,
        "cwd",
    )


def test_a_command_result_settles_its_control_message_in_the_same_transaction(
    api: Client, uniq: str
) -> None:
    oid = uniq + "s"
    register_orchestrator(api, oid, baseDir="/srv/work")
    inbox = f"/api/agents/orchestrator-{oid}/inbox"
    spawn = api.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude"}).json["command"]
    act = api.post(f"/api/orchestrators/{oid}/actions", {"action": "shutdown"}).json["command"]
    claim(api, act["id"], f"orchestrator-{oid}")  # a claimed one is settled too
    assert [m["id"] for m in api.get(inbox).json] == [spawn["id"], act["id"]]
    for cmd, status in ((spawn, "done"), (act, "failed")):
        head = api.log_head()
        r = api.post(f"/api/orchestrators/{oid}/commands/{cmd['id']}/result", {"status": status})
        assert r.status == 200, r
        log = full_log(api)[-2:]
        assert [e["type"] for e in log] == ["CommandResultRecorded", "MessageAcked"]
        assert [e["position"] for e in log] == [head + 1, head + 2]
        assert api.get(f"/api/messages/{cmd['id']}").json["status"] == "acked"
    assert api.get(inbox).json == []


# -- durability ---------------------------------------------------------------------------------------------


def test_messages_survive_restart_and_rebuild(tmp_path: Any) -> None:
    data = tmp_path / "data"
    with RelayProcess(data) as r:
        c = Client(r.url)
        agent(c, "a")
        agent(c, "b", tags=["t"])
        m1 = send(c, "a", "b")
        send(c, "a", "tag:t", meta={"priority": "urgent"})
        claim(c, m1["id"], "b")
        before = c.get("/api/messages").json
        inbox = c.get("/api/agents/b/inbox").json
        c.close()
    with RelayProcess(data) as r:  # from the checkpoint written on a clean stop
        c = Client(r.url)
        assert c.get("/api/messages").json == before
        assert c.get("/api/agents/b/inbox").json == inbox
        c.close()
    (data / "readmodels.json").unlink()
    with RelayProcess(data) as r:  # rebuilt from position 0
        c = Client(r.url)
        assert c.get("/api/messages").json == before
        assert c.get("/api/agents/b/inbox").json == inbox
        c.close()
