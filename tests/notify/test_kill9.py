"""No notice is lost across a real ``kill -9`` of a real ``relay serve``.

The receiver is slow on purpose (it takes a few milliseconds to answer), so
when the relay is killed there is usually a backlog of notices not yet
delivered; after the restart the notifier resumes from its checkpoint.
Duplicates are allowed (at-least-once): receivers dedupe on the id, the log
position. The secret must appear nowhere: not in the relay's output, not in
any file of its data folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.http.helpers import full_log, register_orchestrator
from tests.notify.receiver import Receiver
from tests.support.client import Client
from tests.support.server import RelayProcess

SECRET = "kill9-notify-secret-0123456789abcdef"


README = Path(__file__).parents[2] / "README.md"


def readme_verify() -> Callable[..., dict[str, Any] | None]:
    """The README's receiver recipe, run as written."""
    text = README.read_text()
    start = text.index("**Verifying a notice**")
    block = text[text.index("```python\n", start) + len("```python\n") : text.index("```\n", start + 40)]
    scope: dict[str, Any] = {}
    exec(block, scope)
    return scope["verify"]  # type: ignore[no-any-return]


def failed_positions(client: Client) -> list[int]:
    return [
        e["position"]
        for e in full_log(client)
        if e["type"] == "CommandResultRecorded" and e["data"]["status"] == "failed"
    ]


def run_rounds(tmp_path: Path, rounds: int, per_round: int) -> None:
    data = tmp_path / "data"
    with Receiver(SECRET, delay=0.01) as receiver:
        backlog_at_kill = []
        outputs: list[str] = []
        for i in range(rounds + 1):
            relay = RelayProcess(
                data, ["--notify-url", receiver.url], env={"RELAY_NOTIFY_SECRET": SECRET}
            ).start()
            c = Client(relay.url)
            try:
                if i == 0:
                    register_orchestrator(c, "h1")
                if i == rounds:  # the last run is not killed: it must deliver everything
                    expected = failed_positions(c)
                    receiver.wait(lambda r, want=set(expected): want <= set(r.positions()), timeout=60)
                    health = c.get("/api/health").json
                    break
                for k in range(per_round):
                    cid = c.post("/api/orchestrators/h1/spawn", {"provider": "claude"}).json["command"]["id"]
                    result = {"status": "failed", "error": f"{i}.{k}"}
                    r = c.post(f"/api/orchestrators/h1/commands/{cid}/result", result)
                    assert r.status == 200, r
                backlog_at_kill.append(len(failed_positions(c)) - len(set(receiver.positions())))
            finally:
                c.close()
                if i < rounds:
                    relay.kill()
                else:
                    relay.stop()
                outputs.extend(relay.output)
        got = receiver.positions()
        verify, seen = readme_verify(), set[int]()
        pairs = zip(receiver.bodies, receiver.headers, strict=True)
        accepted = [verify(SECRET.encode(), b, h, seen) for b, h in pairs]
        assert sorted(n["id"] for n in accepted if n is not None) == sorted(set(got))
        with pytest.raises(ValueError, match="bad signature"):
            verify(b"not-the-secret-at-all", receiver.bodies[0], receiver.headers[0], set())
        assert receiver.rejected == []
        assert set(got) == set(expected), "a notice was lost, or one was made up"
        assert len(expected) == rounds * per_round
        first_seen = list(dict.fromkeys(got))
        assert first_seen == sorted(first_seen), "first deliveries must follow the log's order"
        check = next(ch for ch in health["checks"] if ch["name"] == "notifier")
        assert check["urls"][0]["lag"] is not None
        output = "".join(outputs)
        assert "notifier delivering to" in output and SECRET not in output
        for f in data.rglob("*"):
            if f.is_file():
                assert SECRET.encode() not in f.read_bytes(), f"the secret is in {f}"
        print(f"backlog at each kill: {backlog_at_kill}; duplicates: {len(got) - len(set(got))}")


def test_no_notice_is_lost_across_kill_9(tmp_path: Path) -> None:
    run_rounds(tmp_path, rounds=2, per_round=15)


@pytest.mark.slow
def test_no_notice_is_lost_across_many_kill_9s(tmp_path: Path) -> None:
    run_rounds(tmp_path, rounds=8, per_round=40)
