"""Liveness on the page: the reaper turns hosts offline, the empty state, the spawn guard.

This module's relay reaps fast (``--stale-after 1 --reap-every 1``), so any
orchestrator that stops heartbeating goes offline within about two seconds.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.browser.support import Api, playwright_api

pytestmark = pytest.mark.browser
expect = playwright_api().expect

RELAY_ARGS = ["--stale-after", "1", "--reap-every", "1"]


def test_the_empty_state_tells_how_to_start_a_host_daemon(dashboard: Any, api: Api) -> None:
    for o in api.ok("GET", "/api/orchestrators"):
        api.ok("DELETE", f"/api/orchestrators/{o['id']}")
    page = dashboard.open()
    empty = page.locator("#orch-empty")
    expect(empty).to_be_visible()
    expect(page.locator("#host-cmd")).to_have_text(
        f"relay host --relay {dashboard.base_url} --id ID --base-dir DIR --provider claude=claude"
    )
    expect(page.locator("#nav-orch-count")).to_have_text("0/0")
    expect(page.get_by_role("button", name="Spawn agent…")).to_be_disabled()

    oid = f"first-{uuid.uuid4().hex[:6]}"
    api.register(oid)
    expect(empty).to_be_hidden()
    expect(dashboard.card(oid)).to_be_visible()


def test_the_reaper_turns_a_card_offline_without_reload(dashboard: Any, api: Api) -> None:
    page = dashboard.open()
    oid = f"stale-{uuid.uuid4().hex[:6]}"
    api.register(oid, hostname=f"{oid}.lan")
    card = dashboard.card(f"{oid}.lan")
    expect(card).to_be_visible()
    # No heartbeat follows, so the relay's reaper marks it offline by itself.
    expect(card.locator(".badge.status")).to_have_text("offline", timeout=15_000)
    expect(card).to_have_class(re.compile(r"\boffline\b"))
    expect(card.get_by_role("button", name="Spawn…")).to_be_disabled()
    expect(card.locator(".last-seen")).to_have_text(re.compile(r"\d+ s ago"))

    # Offline hosts are not offered in the spawn dialog.
    fleet = api.ok("GET", "/api/orchestrators")
    if not any(o["status"] == "online" for o in fleet):
        expect(page.get_by_role("button", name="Spawn agent…")).to_be_disabled()

    # A heartbeat brings it back, again without reload.
    api.ok("POST", f"/api/orchestrators/{oid}/heartbeat")
    expect(card.locator(".badge.status")).to_have_text("online")
    expect(card.get_by_role("button", name="Spawn…")).to_be_enabled()
    card.get_by_role("button", name="Spawn…").click()
    expect(page.locator("#spawn-orch option")).to_contain_text([re.compile(oid)])

    # Going offline while the dialog is open disables spawning there too.
    expect(page.locator("#spawn-none")).to_be_visible(timeout=15_000)
    expect(page.locator("#spawn-submit")).to_be_disabled()
    page.keyboard.press("Escape")
    expect(page.locator("#spawn-dialog")).to_be_hidden()


def test_agents_view_shows_status_and_last_seen(dashboard: Any, api: Api) -> None:
    aid = f"agent-{uuid.uuid4().hex[:6]}"
    page = dashboard.open("agents")
    api.ok("POST", "/api/agents", {"id": aid, "name": "reviewer", "machine": "box-7",
                                   "capabilities": ["review"], "tags": ["team-a"]})
    row = page.locator(f'#agent-list tr[data-agent="{aid}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("reviewer")
    expect(row).to_contain_text("box-7")
    expect(row).to_contain_text("#team-a")
    expect(row.locator(".badge.status")).to_have_text("offline", timeout=15_000)
    page.get_by_role("button", name=re.compile("^Online")).click()
    expect(row).to_be_hidden()
    page.get_by_role("button", name=re.compile("^Offline")).click()
    expect(row).to_be_visible()
