"""Notifications over real sockets: a relay in this process, a real receiver checking signatures.

The relay runs in-process (tests/property/inprocess.py) with a clock the test
holds, so reaps and deadlines happen when the test says; the receiver is a
real aiohttp server (tests/notify/receiver.py). Nothing here sleeps: tests
wait on what the receiver has recorded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.clock import FakeClock
from relay.config import Settings, SettingsError
from relay.notify import NOTICE_KINDS, Derived, notice_for, sign, url_key, verify
from tests.http.helpers import full_log, managed, register_orchestrator
from tests.notify.receiver import Receiver
from tests.property.inprocess import InProcessRelay
from tests.support.client import Client

SECRET = "s3cret-for-notices-0123456789"
T0 = 1_700_000_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def receiver(clock: FakeClock) -> Iterator[Receiver]:
    with Receiver(SECRET, now_ms=clock.now_ms) as r:
        yield r


def relay_with(tmp_path: Path, clock: FakeClock, *urls: str) -> InProcessRelay:
    return InProcessRelay(
        tmp_path / "data",
        clock,
        stale_after=90.0,
        reap_every=3600.0,
        notify_urls=tuple(urls),
        notify_secret=SECRET,
        notify_retry_max=0.05,
    )


def spawn(client: Client, oid: str, **body: Any) -> str:
    r = client.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude", **body})
    assert r.status == 202, r
    return str(r.json["command"]["id"])


def fail(client: Client, oid: str, error: str = "boom") -> str:
    cid = spawn(client, oid)
    r = client.post(f"/api/orchestrators/{oid}/commands/{cid}/result", {"status": "failed", "error": error})
    assert r.status == 200, r
    return cid


def position_of(client: Client, type_: str, nth: int = 0) -> int:
    return [e["position"] for e in full_log(client) if e["type"] == type_][nth]


CRASH = {"exitStatus": 1, "signal": None, "restarts": 5, "at": T0 + 5}


def test_each_kind_arrives_once_signed_and_exactly_as_specified(
    tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    with relay_with(tmp_path, clock, receiver.url) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "h1")
        register_orchestrator(c, "h2")
        ok = spawn(c, "h1")
        assert c.post(f"/api/orchestrators/h1/commands/{ok}/result", {"status": "done"}).status == 200
        failed = fail(c, "h1", "no such provider")
        c.patch("/api/orchestrators/h1/agents", {"agents": [managed("m1"), managed("m2", crashloop=CRASH)]})
        # the host repeats its report: the same loop is not news again
        c.patch("/api/orchestrators/h1/agents", {"agents": [managed("m2", crashloop=CRASH)]})
        slow = spawn(c, "h2", deadlineSeconds=10)
        clock.advance(11_000)
        c.post("/api/orchestrators/h1/heartbeat")
        assert c.post("/api/system/reap").json["expiredCommandIds"] == [slow]
        clock.advance(91_000)
        c.post("/api/orchestrators/h1/heartbeat")
        assert c.post("/api/system/reap").json["reapedOrchestratorIds"] == ["h2"]

        receiver.wait(lambda r: len(r.notices) >= 4)
        got = receiver.notices
        at_fail = position_of(c, "CommandResultRecorded", 1)
        at_loop = position_of(c, "ManagedAgentsReported", 0)
        at_expired = position_of(c, "CommandExpired")
        at_reaped = position_of(c, "OrchestratorReaped")
        for n in got:
            n.pop("sentAt")
        assert got == [
            {
                "id": at_fail, "kind": "command.failed", "event": "CommandResultRecorded",
                "entityKind": "orchestrator", "entityId": "h1", "at": T0,
                "summary": f"command {failed} on h1 failed: no such provider",
                "data": {"commandId": failed, "agentId": None, "error": "no such provider"},
            },
            {
                "id": at_loop, "kind": "agent.crashloop", "event": "ManagedAgentsReported",
                "entityKind": "orchestrator", "entityId": "h1", "at": T0,
                "summary": "m2 on h1 kept crashing; the host stopped restarting",
                "data": {"agents": [{"agentId": "m2", "provider": "claude", "crashloop": CRASH}]},
            },
            {
                "id": at_expired, "kind": "command.expired", "event": "CommandExpired",
                "entityKind": "orchestrator", "entityId": "h2", "at": T0 + 11_000,
                "summary": f"command {slow} on h2 expired: deadline passed",
                "data": {"commandId": slow, "reason": "deadline passed"},
            },
            {
                "id": at_reaped, "kind": "host.offline", "event": "OrchestratorReaped",
                "entityKind": "orchestrator", "entityId": "h2", "at": T0 + 102_000,
                "summary": "host h2 went offline",
                "data": {"lastSeen": T0},
            },
        ]
        h = receiver.headers[0]
        assert h["X-Relay-Delivery"] == str(at_fail) and h["X-Relay-Event"] == "command.failed"
        assert h["Content-Type"] == "application/json"
        assert receiver.rejected == []
        health = c.get("/api/health").json
        check = next(ch for ch in health["checks"] if ch["name"] == "notifier")
        port = receiver.url.split(":")[2].rstrip("/")
        assert check["urls"][0]["delivered"] == 4
        assert check["urls"][0]["url"] == f"http://127.0.0.1:{port}/…"  # never the path: it may be a secret
        c.close()


def test_a_receiver_that_fails_first_gets_every_notice_later_in_order(
    tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.fail_first = 4
    with relay_with(tmp_path, clock, receiver.url) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "h1")
        cids = [fail(c, "h1", f"e{i}") for i in range(5)]
        receiver.wait(lambda r: len(r.notices) >= 5)
        assert [n["data"]["commandId"] for n in receiver.notices] == cids
        assert receiver.positions() == sorted(receiver.positions())
        assert receiver.attempts == 5 + 4
        c.close()


def test_a_receiver_down_for_long_does_not_hold_back_the_others_and_health_says_so(
    tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    with Receiver(SECRET, now_ms=clock.now_ms) as down:
        down.failing = True
        with relay_with(tmp_path, clock, down.url, receiver.url) as relay:
            c = Client(relay.url)
            register_orchestrator(c, "h1")
            cids = [fail(c, "h1") for _ in range(3)]
            receiver.wait(lambda r: len(r.notices) == 3)
            down.wait(lambda r: r.attempts >= 3)  # it is being retried meanwhile
            check = next(ch for ch in c.get("/api/health").json["checks"] if ch["name"] == "notifier")
            assert check["status"] == "warn", check
            by_key = {u["key"]: u for u in check["urls"]}
            assert by_key[url_key(down.url)]["failures"] >= 1
            assert by_key[url_key(down.url)]["lastError"] == "HTTP 503"
            assert by_key[url_key(receiver.url)]["failures"] == 0
            assert SECRET not in orjson.dumps(check).decode()
            down.failing = False
            down.wait(lambda r: len(r.notices) == 3)
            assert [n["data"]["commandId"] for n in down.notices] == cids
            c.close()


def test_a_new_url_starts_at_the_head_and_a_restart_resumes_from_the_checkpoint(
    tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    with InProcessRelay(tmp_path / "data", clock) as relay:  # no notifier yet
        c = Client(relay.url)
        register_orchestrator(c, "h1")
        fail(c, "h1", "before")
        c.close()
    with relay_with(tmp_path, clock, receiver.url) as relay:
        c = Client(relay.url)
        after = fail(c, "h1", "after")
        receiver.wait(lambda r: len(r.notices) == 1)
        assert receiver.notices[0]["data"]["commandId"] == after  # not flooded with history
        receiver.failing = True
        pending = fail(c, "h1", "while down")
        receiver.wait(lambda r: r.attempts >= 2)
        c.close()
    path = tmp_path / "data" / "notify.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = orjson.loads(path.read_bytes())
    assert receiver.url not in path.read_text() and url_key(receiver.url) in saved["urls"]
    receiver.failing = False
    with relay_with(tmp_path, clock, receiver.url) as relay:
        receiver.wait(lambda r: len(r.notices) == 2)
        assert receiver.notices[1]["data"]["commandId"] == pending


# -- the table and the signature, without sockets -----------------------------------------


def test_the_signature_is_hmac_sha256_over_the_exact_body() -> None:
    body = b'{"id":1}'
    import hashlib
    import hmac

    assert sign("k" * 16, body) == "sha256=" + hmac.new(b"k" * 16, body, hashlib.sha256).hexdigest()
    assert verify("k" * 16, body, sign("k" * 16, body))
    assert not verify("k" * 16, body + b" ", sign("k" * 16, body))
    assert not verify("x" * 16, body, sign("k" * 16, body))
    assert not verify("k" * 16, body, None)


def test_awaiting_input_is_one_row_of_the_table() -> None:
    data = {"agentId": "m1", "attention": "input", "reason": "permission_prompt",
            "excerpt": "Proceed? [y/N]"}
    ev = {
        "position": 9, "type": "AgentAwaitingInput", "entityKind": "orchestrator", "entityId": "h1",
        "at": T0, "data": data,
    }
    n = notice_for(ev, Derived())
    assert n is not None and n["kind"] == "agent.awaitingInput" and n["id"] == 9
    assert n["data"] == {"agentId": "m1", "reason": "permission_prompt", "excerpt": "Proceed? [y/N]"}
    assert set(NOTICE_KINDS) >= {"OrchestratorReaped", "CommandExpired", "AgentAwaitingInput"}
    # An idle agent asks nothing: it is on the dashboard, not paged (ADR 0032).
    assert notice_for({**ev, "data": {**data, "attention": "idle"}}, Derived()) is None


def test_a_crash_loop_is_news_once_per_loop() -> None:
    d = Derived()

    def report(*agents: dict[str, Any]) -> dict[str, Any] | None:
        ev = {"position": 1, "type": "ManagedAgentsReported", "entityId": "h1", "data": {"agents": agents}}
        return notice_for(ev, d)

    assert report(managed("m1")) is None
    assert report(managed("m1", crashloop=CRASH)) is not None
    assert report(managed("m1", crashloop=CRASH)) is None  # repeated by the host
    assert report(managed("m1")) is None  # restarted by hand: the loop is over
    again = report(managed("m1", crashloop={**CRASH, "at": T0 + 9}))
    assert again is not None and again["data"]["agents"][0]["crashloop"]["at"] == T0 + 9
    notice_for({"position": 2, "type": "OrchestratorRemoved", "entityId": "h1", "data": {}}, d)
    assert d.crashloops == {}


def test_settings_refuse_a_url_without_a_secret_and_never_show_the_secret() -> None:
    with pytest.raises(SettingsError, match="--notify-secret"):
        Settings.from_env({"RELAY_NOTIFY_URLS": "http://127.0.0.1:9/hook"})
    with pytest.raises(SettingsError, match="--notify-secret"):
        Settings.from_env({"RELAY_NOTIFY_URLS": "http://127.0.0.1:9/x", "RELAY_NOTIFY_SECRET": "short"})
    with pytest.raises(SettingsError, match="http"):
        Settings.from_env({"RELAY_NOTIFY_URLS": "ftp://h/x", "RELAY_NOTIFY_SECRET": SECRET})
    s = Settings.from_env(
        {"RELAY_NOTIFY_URLS": "http://a.example/1, https://b.example/2", "RELAY_NOTIFY_SECRET": SECRET}
    )
    assert s.notify_urls == ("http://a.example/1", "https://b.example/2")
    assert SECRET not in repr(s)


def test_the_flags_are_repeatable_and_override_the_environment() -> None:
    from relay.cli import build_parser, settings_from

    args = build_parser().parse_args(
        ["serve", "--notify-url", "http://a.example/1", "--notify-url", "https://b.example/2"]
    )
    env = {"RELAY_NOTIFY_URLS": "http://c.example/3", "RELAY_NOTIFY_SECRET": SECRET}
    s = settings_from(args, env)
    assert s.notify_urls == ("http://a.example/1", "https://b.example/2")
    assert s.notify_secret == SECRET
    assert settings_from(build_parser().parse_args(["serve"]), env).notify_urls == ("http://c.example/3",)
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    help_text = serve.format_help()
    for word in ("--notify-url", "--notify-secret", "RELAY_NOTIFY_URLS", "RELAY_NOTIFY_SECRET"):
        assert word in help_text, word


def test_notices_in_archived_and_thinned_stretches_are_still_delivered(
    tmp_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    from tests.loglasts.archivelog import archive_now, open_reader

    epoch = {"epoch_events": 40, "seal_every": 0}
    receiver.failing = True  # down while the log moves on and is archived
    with InProcessRelay(
        tmp_path / "data", clock, notify_urls=(receiver.url,), notify_secret=SECRET,
        notify_retry_max=0.05, archive=False, **epoch,
    ) as relay:
        c = Client(relay.url)
        register_orchestrator(c, "h1")
        cids = [fail(c, "h1", f"old {i}") for i in range(3)]
        for _ in range(120):
            clock.advance(1_000)
            assert c.post("/api/orchestrators/h1/heartbeat").status == 200
        positions = [e["position"] for e in full_log(c) if e["type"] == "CommandResultRecorded"]
        receiver.wait(lambda r: r.attempts >= 2)
        c.close()
    archive_now(tmp_path / "data", clock, keep_heartbeats="0", **epoch)
    app, reader = open_reader(tmp_path / "data")
    try:
        assert reader.covered_upto() > max(positions)  # the notices' events now live in the archive
    finally:
        app.close()
    receiver.failing = False
    with relay_with(tmp_path, clock, receiver.url):
        receiver.wait(lambda r: len(r.notices) == 3)
    assert [n["data"]["commandId"] for n in receiver.notices] == cids
    assert receiver.positions() == positions
