"""The dashboard in a real browser against a real relay: fleet, spawn, actions, history.

Every assertion waits (Playwright's ``expect``) for what a person would see;
nothing sleeps. The page is never reloaded after it opens, so each change
must arrive through the live stream.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest

from tests.browser.support import Api, playwright_api

pytestmark = pytest.mark.browser
expect = playwright_api().expect


def uid(prefix: str) -> str:
    """A fresh id, so tests sharing the module's relay never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def managed(agent_id: str, label: str | None = None, cwd: str = "/srv/work/app") -> dict[str, Any]:
    """A managed agent as the host daemon reports it."""
    agent: dict[str, Any] = {
        "agentId": agent_id,
        "provider": "claude",
        "tmuxSession": f"relay-{agent_id}",
        "cwd": cwd,
        "approvalMode": "guarded",
        "startedAt": int(time.time() * 1000),
    }
    if label:
        agent["label"] = label
    return agent


def test_orchestrator_registered_through_the_api_appears_without_reload(dashboard: Any, api: Api) -> None:
    page = dashboard.open()
    oid = uid("appear")
    host = f"{oid}.example.net"
    api.register(oid, hostname=host, envKeys=["ANTHROPIC_API_KEY", "GH_TOKEN"])

    card = dashboard.card(host)
    expect(card).to_be_visible()
    expect(card.locator(".badge.status")).to_have_text("online")
    expect(card.locator(".orch-id")).to_have_text(oid)
    expect(card.locator(".basedir")).to_have_text("/srv/work")
    expect(card.locator("details.env summary")).to_have_text("2 env vars")
    expect(card.locator(".providers .badge")).to_have_text(["claude", "codex"])
    expect(card.locator(".last-seen")).to_have_text(re.compile(r"just now|\d+ s ago"))
    expect(card.get_by_role("button", name="Spawn…")).to_be_enabled()

    fleet = api.ok("GET", "/api/orchestrators")
    online = sum(o["status"] == "online" for o in fleet)
    expect(page.locator("#nav-orch-count")).to_have_text(f"{online}/{len(fleet)}")

    # Managed agents reported later show up on the same card, still without reload.
    api.ok("PATCH", f"/api/orchestrators/{oid}/agents",
           {"agents": [managed("a1", "frontend"), managed("a2", cwd="/srv/work/api")]})
    rows = card.locator(".managed-agent")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".m-name")).to_have_text("frontend")
    expect(rows.nth(0).locator(".m-cwd")).to_have_text("app")
    expect(rows.nth(1).locator(".m-name")).to_have_text("relay-a2")  # no label: tmux session
    expect(rows.nth(1).locator(".badge.provider")).to_have_text("claude")


def test_spawn_through_the_dialog_creates_a_pending_command(dashboard: Any, api: Api) -> None:
    oid = uid("spawn")
    api.register(oid, hostname=f"{oid}.lan", providers=("claude",),
                 meta={"dirs": ["app", "app/src", "docs"]})
    page = dashboard.open()
    card = dashboard.card(f"{oid}.lan")
    card.get_by_role("button", name="Spawn…").click()

    dialog = page.locator("#spawn-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_label("Orchestrator", exact=True)).to_have_value(oid)
    # Only this host's providers are offered; claude gets the prompt field.
    expect(dialog.locator("input[name=provider]")).to_have_count(1)
    expect(dialog.get_by_role("radio", name="claude")).to_be_checked()
    expect(page.get_by_label("Initial prompt")).to_be_visible()
    cwd = page.get_by_label("Working directory")
    expect(cwd).to_have_value("/srv/work")

    dialog.get_by_role("button", name="app/src").click()
    expect(cwd).to_have_value("/srv/work/app/src")
    page.get_by_label("Label").fill("fix-login")
    dialog.get_by_role("radio", name=re.compile("^Read-only")).check()
    page.get_by_label("Initial prompt").fill("Fix the login redirect loop.")
    dialog.get_by_role("button", name="Spawn", exact=True).click()
    expect(dialog).to_be_hidden()

    pending = card.locator(".pending-cmd")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("spawn claude “fix-login” in app/src")

    dashboard.goto_view("Commands")
    row = page.locator("#cmd-list tr").filter(has_text=f"{oid}.lan")
    expect(row).to_have_count(1)
    expect(row.locator(".badge.status")).to_have_text("pending")
    expect(row).to_contain_text("spawn")
    expect(row).to_contain_text("fix-login")
    expect(row).to_contain_text("read-only")

    [command] = api.ok("GET", f"/api/orchestrators/{oid}/commands")
    assert command["kind"] == "spawn"
    assert command["status"] == "pending"
    assert command["provider"] == "claude"
    assert command["cwd"] == "/srv/work/app/src"
    assert command["label"] == "fix-login"
    assert command["approvalMode"] == "read-only"
    assert command["prompt"] == "Fix the login redirect loop."


def test_restart_and_shutdown_buttons_create_commands(dashboard: Any, api: Api) -> None:
    oid = uid("act")
    api.register(oid, hostname=f"{oid}.lan")
    api.ok("PATCH", f"/api/orchestrators/{oid}/agents", {"agents": [managed("w1", "worker")]})
    page = dashboard.open()
    card = dashboard.card(f"{oid}.lan")

    card.get_by_role("button", name="Restart worker").click()
    expect(card.locator(".pending-cmd")).to_have_count(1)
    expect(card.locator(".pending-cmd").first).to_contain_text("restart worker")

    card.get_by_role("button", name="Shutdown worker").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("relay-w1")
    confirm.get_by_role("button", name="Shut down").click()
    expect(confirm).to_be_hidden()
    expect(card.locator(".pending-cmd")).to_have_count(2)
    expect(card.locator(".pending-cmd").nth(1)).to_contain_text("shutdown worker")

    commands = api.ok("GET", f"/api/orchestrators/{oid}/commands")
    assert [(c["kind"], c["agentId"], c["status"]) for c in commands] == [
        ("restart", "w1", "pending"),
        ("shutdown", "w1", "pending"),
    ]


def test_command_results_arrive_live(dashboard: Any, api: Api) -> None:
    oid = uid("result")
    api.register(oid, hostname=f"{oid}.lan")
    ok = api.ok("POST", f"/api/orchestrators/{oid}/spawn", {"provider": "codex", "label": "ok"})["command"]
    bad = api.ok("POST", f"/api/orchestrators/{oid}/spawn", {"provider": "claude", "label": "bad"})["command"]
    page = dashboard.open("commands")
    rows = page.locator("#cmd-list tr").filter(has_text=f"{oid}.lan")
    expect(rows).to_have_count(2)

    api.ok("POST", f"/api/orchestrators/{oid}/commands/{ok['id']}/result",
           {"status": "done", "agentId": "codex-1"})
    api.ok("POST", f"/api/orchestrators/{oid}/commands/{bad['id']}/result",
           {"status": "failed", "error": "tmux: no server running"})
    done = page.locator(f'#cmd-list tr[data-command="{ok["id"]}"]')
    failed = page.locator(f'#cmd-list tr[data-command="{bad["id"]}"]')
    expect(done.locator(".badge.status")).to_have_text("done")
    expect(done).to_contain_text("codex-1")
    expect(failed.locator(".badge.status")).to_have_text("failed")
    expect(failed.locator(".error-text")).to_have_text("tmux: no server running")

    page.get_by_role("button", name=re.compile("^Failed")).click()
    expect(page.locator(f'#cmd-list tr[data-command="{ok["id"]}"]')).to_have_count(0)
    expect(failed).to_be_visible()


def test_remove_asks_first_then_deletes_the_card(dashboard: Any, api: Api) -> None:
    oid = uid("remove")
    api.register(oid, hostname=f"{oid}.lan")
    api.ok("PATCH", f"/api/orchestrators/{oid}/agents", {"agents": [managed("r1", "keeper")]})
    page = dashboard.open()
    card = dashboard.card(f"{oid}.lan")
    expect(card).to_have_count(1)

    card.get_by_role("button", name="Remove").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("1 managed agent keep running")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(card).to_have_count(1)

    card.get_by_role("button", name="Remove").click()
    confirm.get_by_role("button", name="Remove").click()
    expect(card).to_have_count(0)
    status, _ = api.call("GET", f"/api/orchestrators/{oid}")
    assert status == 404


def test_a_rejected_spawn_shows_the_relays_error_inline(dashboard: Any, api: Api) -> None:
    oid = uid("reject")
    api.register(oid, hostname=f"{oid}.lan", base_dir="/srv/work")
    outside = "/srv/work2/secrets"
    status, answer = api.call("POST", f"/api/orchestrators/{oid}/spawn",
                              {"provider": "codex", "cwd": outside})
    assert status == 400
    page = dashboard.open()
    dashboard.card(f"{oid}.lan").get_by_role("button", name="Spawn…").click()
    dialog = page.locator("#spawn-dialog")
    dialog.get_by_role("radio", name="codex").check()
    expect(page.get_by_label("Initial prompt")).to_be_hidden()
    page.get_by_label("Working directory").fill(outside)
    dialog.get_by_role("button", name="Spawn", exact=True).click()

    error = page.locator("#spawn-cwd-error")
    expect(error).to_be_visible()
    expect(error).to_have_text(answer["error"])
    expect(dialog).to_be_visible()
    assert api.ok("GET", f"/api/orchestrators/{oid}/commands") == []

    # Fixing the field clears the error, and the spawn then goes through.
    page.get_by_label("Working directory").fill("/srv/work")
    expect(error).to_be_hidden()
    dialog.get_by_role("button", name="Spawn", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(dashboard.card(f"{oid}.lan").locator(".pending-cmd")).to_have_count(1)


def test_the_slider_shows_an_earlier_fleet(dashboard: Any, api: Api) -> None:
    old, new = uid("past"), uid("later")
    api.register(old, hostname=f"{old}.lan")
    api.ok("PATCH", f"/api/orchestrators/{old}/agents", {"agents": [managed("h1", "historian")]})
    before = api.head()
    api.register(new, hostname=f"{new}.lan")
    api.ok("DELETE", f"/api/orchestrators/{old}")

    page = dashboard.open("history")
    past = page.locator("#past-orchs")
    head = api.head()
    expect(page.locator("#pos-head")).to_have_text(str(head))
    expect(past.get_by_role("heading", name=f"{new}.lan")).to_be_visible()
    expect(past.get_by_role("heading", name=f"{old}.lan")).to_have_count(0)

    position = page.get_by_label("Position", exact=True)
    position.fill(str(before))
    position.press("Enter")
    expect(page.locator("#past-pos")).to_have_text(str(before))
    expect(page.locator("#pos-mode")).to_have_text("past")
    expect(past.get_by_role("heading", name=f"{old}.lan")).to_be_visible()
    expect(past.get_by_role("heading", name=f"{new}.lan")).to_have_count(0)
    expect(past).to_contain_text("historian")

    # The slider itself works from the keyboard: one step later, then back to now.
    slider = page.get_by_label("Log position slider")
    slider.focus()
    slider.press("ArrowRight")
    expect(page.locator("#past-pos")).to_have_text(str(before + 1))
    expect(past.get_by_role("heading", name=f"{new}.lan")).to_be_visible()
    page.get_by_role("button", name="Now").click()
    expect(page.locator("#pos-mode")).to_have_text("live")
    expect(past.get_by_role("heading", name=f"{old}.lan")).to_have_count(0)

    # The timeline lists the log; choosing an entry moves the fleet there.
    timeline = page.locator("#timeline")
    expect(timeline.locator("li").first).to_be_visible()
    timeline.get_by_role("button", name=re.compile(rf"position {before}:")).click()
    expect(page.locator("#past-pos")).to_have_text(str(before))


def test_the_page_works_from_the_keyboard(dashboard: Any, api: Api) -> None:
    oid = uid("keys")
    api.register(oid, hostname=f"{oid}.lan")
    page = dashboard.open()
    spawn = dashboard.card(f"{oid}.lan").get_by_role("button", name="Spawn…")
    spawn.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#spawn-dialog")).to_be_visible()
    expect(page.get_by_label("Orchestrator", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#spawn-dialog")).to_be_hidden()
    expect(spawn).to_be_focused()

    page.keyboard.press("/")
    expect(page.get_by_label("Filter orchestrators")).to_be_focused()
    page.keyboard.type(oid)
    expect(page.locator("#orch-list article.card")).to_have_count(1)
    page.keyboard.press("Tab")  # the next control is reachable, not trapped
    expect(page.get_by_label("Filter orchestrators")).not_to_be_focused()
