"""A broadcast stores its content once (issue 17, Medium; ADR 0014).

On SQLite whatever ``RELAY_TEST_STORE`` says: the figures are read from its file.

Measured on the real SQLite file of a real relay: what a broadcast adds per
recipient, what the reply weighs, that an over-large fan-out is refused
before anything is written, and that logs written before the change (one
full ``MessageSent`` per recipient) still read the same.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from relay.application import RelayApp
from relay.config import Settings
from relay.domain.message import MAX_FANOUT_BYTES, Message, broadcast_copy_id
from relay.store import SQLITE_FILE, store_env
from tests.support.client import Client
from tests.support.server import RelayProcess

BODY_BYTES = 100_000
RECIPIENTS = 40


def agents(c: Client, ids: list[str], tag: str) -> None:
    for aid in ids:
        r = c.post("/api/agents", {"id": aid, "tags": [tag]})
        assert r.status == 201, r


def stored_bytes_after(data: Path, position: int) -> tuple[int, int]:
    """(rows, bytes of id + topic + state) the log holds after ``position``, read from the file."""
    db = sqlite3.connect(f"file:{data / SQLITE_FILE}?mode=ro", uri=True)
    try:
        rows, size = db.execute(
            "SELECT count(*), coalesce(sum(length(originator_id) + length(topic) + length(state)), 0) "
            "FROM stored_events WHERE rowid > ?",
            (position,),
        ).fetchone()
    finally:
        db.close()
    return int(rows), int(size)


def test_a_broadcast_stores_its_body_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = [f"a{i:03d}" for i in range(RECIPIENTS)]
    with RelayProcess(data, store="sqlite") as relay:
        c = Client(relay.url)
        agents(c, ["sender", *ids], "crew")
        head = c.log_head()
        body = "x" * BODY_BYTES
        r = c.post("/api/messages", {"from": "sender", "to": "tag:crew", "body": body, "meta": {"k": 1}})
        assert r.status == 201, r
        rows, size = stored_bytes_after(data, head)
        assert rows == RECIPIENTS + 1  # the content once, then one delivery per recipient
        per_recipient = (size - BODY_BYTES) / RECIPIENTS
        print(f"\nbroadcast of {BODY_BYTES} B to {RECIPIENTS}: {size} B stored, "
              f"{per_recipient:.0f} B per recipient beyond the body")
        assert per_recipient < 400, per_recipient
        # The reply is the message once plus who got it, not a copy per recipient.
        assert len(r.body) < BODY_BYTES + 200 * RECIPIENTS, len(r.body)
        sent = r.json
        assert sent["recipientCount"] == RECIPIENTS and sent["recipients"] == ids
        assert sent["body"] == body and "messages" not in sent
        # Every copy still reads as a whole message, and lives on its own.
        copies = c.get(f"/api/messages?broadcastId={sent['broadcastId']}&limit=1000").json["messages"]
        assert [m["recipient"] for m in copies] == ids
        assert all(m["body"] == body and m["meta"] == {"k": 1} and m["from"] == "sender" for m in copies)
        first = sent["messageIds"][0]
        assert c.post(f"/api/messages/{first}/claim", {"agentId": ids[0]}).status == 200
        assert c.post(f"/api/messages/{first}/ack", {"agentId": ids[0]}).json["status"] == "acked"
        before = c.get(f"/api/messages?broadcastId={sent['broadcastId']}&limit=1000").json
        c.close()
    # The checkpoint holds the body once, too, and a restart reads the same.
    checkpoint = (data / "readmodels.json").stat().st_size
    assert checkpoint < 2 * BODY_BYTES, checkpoint
    with RelayProcess(data, store="sqlite") as relay:
        c = Client(relay.url)
        assert c.get(f"/api/messages?broadcastId={sent['broadcastId']}&limit=1000").json == before
        c.close()


def test_an_oversized_fan_out_is_413_and_writes_nothing(tmp_path: Path) -> None:
    recipients = 200
    body_bytes = 900_000  # under the 1 MiB body limit; 200 copies are 180 MB
    with RelayProcess(tmp_path / "data") as relay:
        c = Client(relay.url)
        agents(c, ["sender", *(f"b{i:03d}" for i in range(recipients))], "all")
        head = c.log_head()
        r = c.post("/api/messages", {"from": "sender", "to": "*", "body": "y" * body_bytes})
        assert r.status == 413, r
        assert str(MAX_FANOUT_BYTES) in r.json["error"] and "200 copies" in r.json["error"]
        assert c.log_head() == head
        # Within the limit it goes through.
        small = MAX_FANOUT_BYTES // recipients - 100
        assert c.post("/api/messages", {"from": "sender", "to": "*", "body": "z" * small}).status == 201
        c.close()


def _old_style_broadcast(data: Path, broadcast_id: str, recipients: list[str], body: str) -> None:
    """What the relay wrote before ADR 0014: one full MessageSent per recipient."""
    app = RelayApp(env=store_env(Settings(data_dir=data)))
    copies = [
        Message(
            message_id=broadcast_copy_id(broadcast_id, r),
            sender="sender",
            to="tag:old",
            recipient=r,
            message_type="message",
            subject="old news",
            body=body,
            meta={"priority": "urgent"},
            broadcast_id=broadcast_id,
            at=1_700_000_000_000,
        )
        for r in recipients
    ]
    app.save(*copies)
    app.close()


def test_logs_from_before_still_read_the_same(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    recipients = ["o1", "o2", "o3"]
    _old_style_broadcast(data, "bcast-old", recipients, "the old body")

    def listing(c: Client) -> list[dict[str, Any]]:
        return c.get("/api/messages?broadcastId=bcast-old").json["messages"]

    with RelayProcess(data, store="sqlite") as relay:
        c = Client(relay.url)
        copies = listing(c)
        assert [m["recipient"] for m in copies] == recipients
        for m in copies:
            shown = (m["body"], m["subject"], m["from"], m["to"])
            assert shown == ("the old body", "old news", "sender", "tag:old")
            assert m["priority"] == "urgent" and m["status"] == "pending" and m["broadcastId"] == "bcast-old"
        agents(c, recipients, "old")
        mid = copies[1]["id"]
        assert c.post(f"/api/messages/{mid}/claim", {"agentId": "o2"}).status == 200
        assert c.post(f"/api/messages/{mid}/ack", {"agentId": "o2"}).json["status"] == "acked"
        # A new broadcast beside the old one.
        new = c.post("/api/messages", {"from": "o1", "to": "tag:old", "body": "new"}).json
        before = (listing(c), c.get(f"/api/messages?broadcastId={new['id']}").json)
        assert [m["body"] for m in before[1]["messages"]] == ["new", "new"]
        c.close()
    # From the checkpoint, and rebuilt from position 0: the same.
    with RelayProcess(data, store="sqlite") as relay:
        c = Client(relay.url)
        assert (listing(c), c.get(f"/api/messages?broadcastId={new['id']}").json) == before
        c.close()
    (data / "readmodels.json").unlink()
    with RelayProcess(data, store="sqlite") as relay:
        c = Client(relay.url)
        assert (listing(c), c.get(f"/api/messages?broadcastId={new['id']}").json) == before
        c.close()
