"""Screenshots of the dashboard for the README, at 1280x800 and 390x844.

Run: ``python -m tests.browser.make_screenshots [OUT_DIR]`` (default
docs/screenshots). It starts its own relay on a temporary data folder, fills it
with a small but realistic fleet through the API, and photographs each view.
test_screenshots.py runs the same code into a temporary folder, so it keeps
working as the page changes.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, Api
from tests.support.server import RelayProcess


def populate(api: Api) -> int:
    """A fleet worth looking at; returns a past position worth showing in History."""
    now = int(time.time() * 1000)
    api.register("build-01", hostname="build-01.lab", base_dir="/srv/work",
                 envKeys=["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GH_TOKEN"],
                 meta={"dirs": ["relay", "relay/docs", "relay/tests", "website", "website/src"]})
    api.register("gpu-box", hostname="gpu-box.lab", base_dir="/home/ci/projects",
                 providers=("claude",), envKeys=["ANTHROPIC_API_KEY"])
    api.register("laptop-ana", hostname="laptop-ana", base_dir="/Users/ana/code",
                 providers=("codex",))
    api.ok("PATCH", "/api/orchestrators/build-01/agents", {"agents": [
        {"agentId": "claude-7f3a", "provider": "claude", "tmuxSession": "relay-claude-7f3a",
         "cwd": "/srv/work/relay", "label": "fix-flaky-tests", "approvalMode": "guarded",
         "startedAt": now - 41 * 60_000},
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
    return past


def shoot(browser: Any, base_url: str, out: Path, past: int | None = None) -> list[Path]:
    """Photograph each view at both sizes; returns the files written."""
    from playwright.sync_api import expect

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport, device_scale_factor=1,
                                      color_scheme="light")
        page = context.new_page()
        for view in ("orchestrators", "commands", "agents", "history"):
            page.goto(f"{base_url}/#{view}")
            expect(page.locator("#stream")).to_have_attribute("data-state", "live")
            if view == "orchestrators":
                expect(page.locator("#orch-list article")).to_have_count(3)
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
        context.close()
    return written


def main(argv: list[str]) -> int:
    """Start a relay, populate it, take the pictures."""
    from playwright.sync_api import sync_playwright

    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    with tempfile.TemporaryDirectory() as data, RelayProcess(Path(data)) as relay:
        past = populate(Api(relay.url))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for path in shoot(browser, relay.url, out, past):
                print(path)
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
