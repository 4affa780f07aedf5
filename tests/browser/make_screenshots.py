"""Screenshots of the dashboard for the README, at 1280x800 and 390x844.

Run: ``python -m tests.browser.make_screenshots [OUT_DIR]`` (default
docs/screenshots). It starts its own relay on a temporary data folder, fills it
with a small but realistic fleet through the API, and photographs each view.
test_screenshots.py runs the same code into a temporary folder, so it keeps
working as the page changes.

No host daemon runs: the fleet's hosts are played over HTTP, as a daemon
would (registrations, reports, an agent waiting for input, and, for the agent
view, the screen a host pushes while someone watches), so the pictures are
the same on every run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, Api
from tests.host.conftest import wait_for
from tests.support.server import RelayProcess


@dataclass
class Fleet:
    """What ``populate`` made that the pictures need."""

    past: int  # a past position worth showing in History
    host_token: str  # build-01's orchestrator token: it pushes the agent view's screen


# The agent view's subject, on build-01: in its own worktree, waiting for an answer.
WATCHED = "claude-7f3a"
# What a host's snapshot of its pane looks like: colours and all (ANSI escapes).
SCREEN = "\r\n".join([
    "\x1b[1;38;5;209m✻\x1b[0m \x1b[1mfix-flaky-tests\x1b[0m "
    "\x1b[2m· claude · /srv/work/.relay/worktrees/claude-7f3a/relay\x1b[0m",
    "",
    "\x1b[38;5;246m>\x1b[0m Make tests/test_sync.py pass reliably; it fails about one run in twenty.",
    "",
    "\x1b[32m●\x1b[0m The retry loop sleeps 0.1 s and hopes the worker caught up. It should wait",
    "  on the worker's event with a deadline instead.",
    "",
    "\x1b[32m●\x1b[0m \x1b[1mRun\x1b[0m(pytest -q tests/test_sync.py -p no:randomly --count 50)",
    "  \x1b[32m50 passed\x1b[0m in 4.12s",
    "",
    "\x1b[32m●\x1b[0m \x1b[1mEdit\x1b[0m(tests/test_sync.py, relay/sync.py, relay/worker.py)",
    "  \x1b[31m-        time.sleep(0.1)\x1b[0m",
    "  \x1b[32m+        assert worker.done.wait(timeout=5), \"worker did not finish\"\x1b[0m",
    "",
    "\x1b[33m?\x1b[0m Apply the patch to 3 files and commit on \x1b[36mrelay/fix-flaky-tests\x1b[0m? [y/N] ",
])
EXCERPT = (
    "  + assert worker.done.wait(timeout=5), \"worker did not finish\"\n\n"
    "? Apply the patch to 3 files and commit on relay/fix-flaky-tests? [y/N]"
)


def populate(api: Api) -> Fleet:
    """A fleet worth looking at, with one agent waiting for input."""
    now = int(time.time() * 1000)
    host_token = api.register(
        "build-01", hostname="build-01.lab", base_dir="/srv/work",
        envKeys=["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GH_TOKEN"],
        meta={"dirs": ["relay", "relay/docs", "relay/tests", "website", "website/src"]},
    )["orchestratorToken"]
    gpu_token = api.register("gpu-box", hostname="gpu-box.lab", base_dir="/home/ci/projects",
                             providers=("claude",), envKeys=["ANTHROPIC_API_KEY"])["orchestratorToken"]
    api.register("laptop-ana", hostname="laptop-ana", base_dir="/Users/ana/code",
                 providers=("codex",))
    api.ok("PATCH", "/api/orchestrators/build-01/agents", {"agents": [
        {"agentId": WATCHED, "provider": "claude", "tmuxSession": f"relay-{WATCHED}",
         "cwd": f"/srv/work/.relay/worktrees/{WATCHED}/relay", "label": "fix-flaky-tests",
         "approvalMode": "guarded", "startedAt": now - 41 * 60_000,
         "worktree": f"/srv/work/.relay/worktrees/{WATCHED}", "branch": "relay/fix-flaky-tests",
         "sessionId": "4f0c2b7e-9d1a-4c55-8f3e-2b6a1d9e7c10"},
        {"agentId": "codex-91b2", "provider": "codex", "tmuxSession": "relay-codex-91b2",
         "cwd": "/srv/work/website/src", "approvalMode": "open", "startedAt": now - 7 * 60_000},
    ]})
    past = api.head()  # three hosts, one of them with agents: History shows this one
    api.ok("PATCH", "/api/orchestrators/gpu-box/agents", {"agents": [
        {"agentId": "claude-0c11", "provider": "claude", "tmuxSession": "relay-claude-0c11",
         "cwd": "/home/ci/projects/bench", "label": "profile-kernels",
         "approvalMode": "read-only", "startedAt": now - 3 * 3600_000},
    ]})
    api.ok("POST", "/api/agents", {"id": "reviewer-1", "name": "reviewer", "machine": "build-01.lab",
                                   "capabilities": ["review", "messages"], "tags": ["team-web"]})
    done = api.ok("POST", "/api/orchestrators/build-01/spawn",
                  {"provider": "codex", "cwd": "/srv/work/website/src", "approvalMode": "open"})
    api.ok("POST", f"/api/orchestrators/build-01/commands/{done['command']['id']}/result",
           {"status": "done", "agentId": "codex-91b2"})
    failed = api.ok("POST", "/api/orchestrators/gpu-box/actions",
                    {"action": "restart", "agentId": "claude-0c11"})
    api.ok("POST", f"/api/orchestrators/gpu-box/commands/{failed['command']['id']}/result",
           {"status": "failed", "error": "tmux session relay-claude-0c11 not found"})
    api.ok("POST", "/api/orchestrators/build-01/spawn",
           {"provider": "claude", "cwd": "relay/docs", "label": "write-adr",
            "prompt": "Draft an ADR for the SSE resume design."})
    api.ok("POST", "/api/orchestrators/laptop-ana/heartbeat")
    host = Api(api.base_url, host_token)
    host.ok("POST", f"/api/orchestrators/build-01/agents/{WATCHED}/attention", {
        "attention": "input", "reason": "no output for 30s; matches \\[[yY]/[nN]\\]", "excerpt": EXCERPT,
    })
    Api(api.base_url, gpu_token).ok("POST", "/api/orchestrators/gpu-box/agents/claude-0c11/attention", {
        "attention": "idle", "reason": "no output for 30s", "excerpt": "Profile written to bench/out.json",
    })
    return Fleet(past=past, host_token=host_token)


def push_screen(api: Api, host_token: str) -> None:
    """Play build-01 while the agent view watches: push the pane's screen until it is delivered."""
    host = Api(api.base_url, host_token)
    chunk = {"agentId": WATCHED, "kind": "snapshot", "reset": True, "data": SCREEN, "cols": 110, "rows": 22}

    def delivered() -> bool:
        answer = host.ok("POST", "/api/orchestrators/build-01/output", {"chunks": [chunk]})
        return bool(answer["delivered"])

    wait_for(delivered, 15, "the agent view to watch (a viewer on the output stream)")


def shoot(browser: Any, base_url: str, out: Path, fleet: Fleet | None = None) -> list[Path]:
    """Photograph each view at both sizes; returns the files written."""
    from playwright.sync_api import expect

    past = fleet.past if fleet else None
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport, device_scale_factor=1,
                                      color_scheme="light")
        page = context.new_page()
        for view in ("orchestrators", "inbox", "commands", "agents", "history"):
            page.goto(f"{base_url}/#{view}")
            expect(page.locator("#stream")).to_have_attribute("data-state", "live")
            if view == "orchestrators":
                expect(page.locator("#orch-list article")).to_have_count(3)
            if view == "inbox":
                expect(page.locator("#inbox-list li")).to_have_count(1)
            if view == "history":
                expect(page.locator("#pos-head")).not_to_have_text("0")  # the log is read
                if past is not None:
                    page.get_by_label("Position", exact=True).fill(str(past))
                    page.get_by_label("Position", exact=True).press("Enter")
                    expect(page.locator("#past-pos")).to_have_text(str(past))
                    # At that position only build-01 reports agents (two of them).
                    expect(page.locator("#past-summary")).to_contain_text("· 2 managed agent(s)")
                expect(page.locator("#past-orchs article")).to_have_count(3)
                page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
            path = out / f"{view}-{size_name}.png"
            page.screenshot(path=str(path))
            written.append(path)
        page.goto(f"{base_url}/#orchestrators")
        page.locator("#orch-list article").first.get_by_role("button", name="Spawn…").click()
        page.locator("#spawn-dialog").get_by_role("button", name="relay/docs").click()
        path = out / f"spawn-{size_name}.png"
        page.screenshot(path=str(path))
        written.append(path)
        page.keyboard.press("Escape")  # the spawn dialog
        if fleet is not None:
            page.goto(f"{base_url}/#agent/build-01/{WATCHED}")
            push_screen(Api(base_url), fleet.host_token)
            expect(page.locator("#term-status")).to_have_attribute("data-state", "live")
            expect(page.locator("#term-box .xterm-rows")).to_contain_text("Apply the patch")
            page.get_by_label("Type to the agent").fill("y")
            page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
            path = out / f"agent-{size_name}.png"
            page.screenshot(path=str(path), full_page=size_name == "desktop")
            written.append(path)
        context.close()
    return written


def main(argv: list[str]) -> int:
    """Start a relay, populate it, take the pictures."""
    from playwright.sync_api import sync_playwright

    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    with tempfile.TemporaryDirectory() as data, RelayProcess(Path(data)) as relay:
        fleet = populate(Api(relay.url))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for path in shoot(browser, relay.url, out, fleet):
                print(path)
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
