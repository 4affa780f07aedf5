"""Issue 15 on the page: capacity bars, agent states, expired commands, the reaper's banner.

This module's relay calls a host stale after 3 s, reaps every half second and
suspends the reaper when more than 3 entities (and half the online ones) go
silent in one pass. Hosts that must stay online are kept beating by a thread
at a host's own pace; everything else is waited for on the page.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.browser.support import Api, playwright_api

pytestmark = pytest.mark.browser
expect = playwright_api().expect

RELAY_ARGS = ["--stale-after", "3", "--reap-every", "0.5", "--max-reap-min", "3"]


@contextmanager
def beating(api: Api, oid: str, load: int | None = None) -> Iterator[None]:
    """Heartbeat ``oid`` every 0.5 s (a host's pace) until the block ends."""
    stop = threading.Event()
    body = None if load is None else {"load": {"activeAgents": load}}

    def run() -> None:
        while not stop.is_set():
            api.call("POST", f"/api/orchestrators/{oid}/heartbeat", body)
            stop.wait(0.5)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def _agents(*crashlooping: str, healthy: tuple[str, ...] = ()) -> dict[str, Any]:
    agents = [
        {"agentId": a, "provider": "claude", "label": a, "cwd": "/srv/work/x", "tmuxSession": f"relay-{a}"}
        for a in healthy
    ]
    agents += [
        {
            "agentId": a, "provider": "codex", "label": a, "cwd": "/srv/work/y", "tmuxSession": f"relay-{a}",
            "restarts": 5, "lastExit": {"status": 3, "signal": None, "at": 1},
            "crashloop": {"exitStatus": 3, "signal": None, "restarts": 5, "at": 1},
        }
        for a in crashlooping
    ]
    return {"agents": agents}


def _colour(locator: Any) -> str:
    """The computed text colour of a static element (the legend)."""
    return str(locator.evaluate("el => getComputedStyle(el).color"))


def test_capacity_bars_and_agent_states_with_one_colour_each(dashboard: Any, api: Api) -> None:
    oid = f"cap-{uuid.uuid4().hex[:6]}"
    api.register(oid, hostname=f"{oid}.lan", maxAgents=4, labels={"zone": "b"})
    api.ok("PATCH", f"/api/orchestrators/{oid}/agents", _agents("crashy", healthy=("worker",)))
    page = dashboard.open()
    card = dashboard.card(f"{oid}.lan")
    with beating(api, oid, load=1):
        meter = card.get_by_role("meter", name=f"Capacity of {oid}.lan")
        expect(meter).to_have_attribute("aria-valuenow", "1")
        expect(meter).to_have_attribute("aria-valuemax", "4")
        expect(card.locator(".capacity-text")).to_have_text("1 / 4")
        expect(card.locator(".labels")).to_have_text("zone=b")
        worker = card.locator('li.managed-agent[data-agent="worker"]')
        crashy = card.locator('li.managed-agent[data-agent="crashy"]')
        expect(worker.locator(".badge.state")).to_have_text("running")
        expect(crashy.locator(".badge.state")).to_have_text("crashloop")
        expect(crashy.locator(".m-crash")).to_contain_text("exit status 3 after 5 restarts")

        legend = page.locator("#state-legend")
        colours = {
            st: _colour(legend.locator(f".state-{st}"))
            for st in ("running", "unknown", "lost", "crashloop")
        }
        assert len(set(colours.values())) == 4, colours  # four states, four colours
        # The cards re-render with each heartbeat: compare with retries, not once.
        expect(worker.locator(".badge.state")).to_have_css("color", colours["running"])
        expect(crashy.locator(".badge.state")).to_have_css("color", colours["crashloop"])

    # Silent now: the reaper marks the host offline and its agents become unknown.
    expect(card.locator(".badge.status")).to_have_text("offline", timeout=15_000)
    expect(worker.locator(".badge.state")).to_have_text("unknown")
    expect(crashy.locator(".badge.state")).to_have_text("unknown")
    expect(worker.locator(".badge.state")).to_have_css("color", colours["unknown"])
    page.reload()
    expect(dashboard.card(f"{oid}.lan").locator('li[data-state="unknown"]')).to_have_count(2)


def test_an_expired_command_shows_its_reason(dashboard: Any, api: Api) -> None:
    oid = f"exp-{uuid.uuid4().hex[:6]}"
    api.register(oid, hostname=f"{oid}.lan")
    page = dashboard.open("commands")
    with beating(api, oid):
        cid = api.ok(
            "POST", f"/api/orchestrators/{oid}/spawn",
            {"provider": "claude", "label": "too-late", "deadlineSeconds": 1},
        )["command"]["id"]
        row = page.locator(f'tr.cmd[data-command="{cid}"]')
        # Nobody starts it: the reaper expires it after its deadline, live on the page.
        expect(row.locator(".badge.status")).to_have_text("expired", timeout=15_000)
        expect(row.locator(".expired-text")).to_contain_text("expired: deadline passed")
        page.get_by_role("button", name=re.compile("^Expired")).click()
        expect(page.locator("tr.cmd.expired")).to_have_count(
            sum(c["status"] == "expired" for c in api.ok("GET", f"/api/orchestrators/{oid}/commands"))
        )
        expect(row).to_be_visible()


def test_a_banner_shows_while_the_reaper_is_suspended(dashboard: Any, api: Api) -> None:
    page = dashboard.open()
    banner = page.locator("#reaper-banner")
    expect(banner).to_be_hidden()
    ids = [f"outage-{i}-{uuid.uuid4().hex[:4]}" for i in range(8)]
    for oid in ids:
        api.register(oid)
    # All eight go silent together (a pass may catch the first three of them
    # alone, and reap them, on a loaded machine): too many to be believed.
    expect(banner).to_be_visible(timeout=15_000)
    # However many of the eight were stale at that pass (registering takes time
    # on a loaded machine), it was more than the brake lets through.
    expect(banner).to_contain_text(re.compile(r"The reaper is suspended: \d+ of \d+ online"))
    health = api.ok("GET", "/api/health")
    assert health["status"] == "degraded"
    page.reload()  # from /api/health this time, not from the stream
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("The reaper is suspended")

    for oid in ids:  # the outage is over: these hosts were retired
        api.ok("DELETE", f"/api/orchestrators/{oid}")
    expect(banner).to_be_hidden(timeout=15_000)
    assert api.ok("GET", "/api/health")["status"] != "degraded"
