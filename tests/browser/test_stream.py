"""The live stream: it drops, the page says so, and it resumes without losing an event.

The drop is made by a proxy between the browser and the relay, so that the
relay keeps running and events can be written *during* the outage; only a
correct resume (Last-Event-ID, or ?since= after a refused reconnect) brings
them to the page. A second test restarts the relay itself on the same port
and data folder, as an upgrade would.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.support import DESKTOP, Api, CuttableProxy, playwright_api
from tests.support.server import RelayProcess

pytestmark = pytest.mark.browser
expect = playwright_api().expect


@pytest.fixture
def proxy(relay: RelayProcess) -> Iterator[CuttableProxy]:
    """A cuttable path from the browser to the module's relay."""
    parts = urlsplit(relay.url)
    p = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 80)
    yield p
    p.close()


@pytest.mark.parametrize("mode", ["refuse", "unavailable"])
def test_a_dropped_stream_resumes_without_losing_an_event(
    browser: Any, api: Api, proxy: CuttableProxy, mode: str
) -> None:
    """``refuse``: the browser's own retry with Last-Event-ID; ``unavailable``:
    a 503 closes the EventSource for good and the page reopens with ?since=."""
    keep, gone, new = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("keep", "gone", "new"))
    api.register(keep, hostname=f"{keep}.lan")
    api.register(gone, hostname=f"{gone}.lan")
    context = browser.new_context(viewport=DESKTOP)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{proxy.url}/#orchestrators")
        stream = page.locator("#stream")
        expect(stream).to_have_attribute("data-state", "live")
        cards = page.locator("#orch-list article.card")
        expect(cards.filter(has_text=f"{gone}.lan")).to_have_count(1)
        # One live event before the drop, so the page has a position to resume from.
        api.ok("POST", f"/api/orchestrators/{keep}/heartbeat")
        api.ok("PATCH", f"/api/orchestrators/{keep}/agents", {"agents": [
            {"agentId": "k1", "provider": "codex", "tmuxSession": "relay-k1", "cwd": "/srv/work"}]})
        expect(cards.filter(has_text=f"{keep}.lan").locator(".managed-agent")).to_have_count(1)

        proxy.cut(mode)
        expect(stream).not_to_have_attribute("data-state", "live")
        expect(stream).to_contain_text("Stream down")

        # Written while the page cannot hear: it must still see every one of them.
        api.register(new, hostname=f"{new}.lan")
        api.ok("DELETE", f"/api/orchestrators/{gone}")
        spawned = api.ok("POST", f"/api/orchestrators/{keep}/spawn",
                         {"provider": "codex", "label": "during-outage"})["command"]
        api.ok("POST", f"/api/orchestrators/{keep}/actions", {"action": "restart", "agentId": "k1"})
        api.ok("POST", f"/api/orchestrators/{keep}/commands/{spawned['id']}/result",
               {"status": "done", "agentId": "k2"})
        # The page does not know yet, and has tried (and failed) to reconnect.
        expect(cards.filter(has_text=f"{new}.lan")).to_have_count(0)
        assert proxy.turned_away.wait(30), "the page never tried to reconnect"

        proxy.resume()
        expect(stream).to_have_attribute("data-state", "live", timeout=20_000)
        resumed = proxy.stream_requests()[-1]
        if mode == "refuse":  # the browser's own retry, carrying the last position
            assert re.search(r"^last-event-id: \d+\r$", resumed, re.I | re.M), resumed
        else:  # the page's own new EventSource, resuming by query
            assert re.match(r"GET /api/events\?since=\d+ ", resumed), resumed
        expect(cards.filter(has_text=f"{new}.lan")).to_have_count(1)
        expect(cards.filter(has_text=f"{gone}.lan")).to_have_count(0)
        keep_card = cards.filter(has_text=f"{keep}.lan")
        expect(keep_card.locator(".pending-cmd")).to_have_count(1)
        expect(keep_card.locator(".pending-cmd")).to_contain_text("restart")

        page.locator(".tabs").get_by_role("link", name="Commands").click()
        rows = page.locator("#cmd-list tr").filter(has_text=f"{keep}.lan")
        expect(rows).to_have_count(2)
        spawned_row = page.locator(f'#cmd-list tr[data-command="{spawned["id"]}"]')
        expect(spawned_row.locator(".badge.status")).to_have_text("done")
    finally:
        context.close()
    assert not errors, errors


def test_the_page_follows_a_relay_restart_on_the_same_port(
    browser: Any, tmp_path: Path
) -> None:
    first = RelayProcess(tmp_path / "data").start()
    port = urlsplit(first.url).port
    second: RelayProcess | None = None
    context = browser.new_context(viewport=DESKTOP)
    try:
        api = Api(first.url)
        api.register("before-restart")
        page = context.new_page()
        page.goto(f"{first.url}/#orchestrators")
        stream = page.locator("#stream")
        expect(stream).to_have_attribute("data-state", "live")
        expect(page.locator("#orch-list article.card")).to_have_count(1)

        assert first.stop() == 0
        expect(stream).to_contain_text("Stream down")

        second = RelayProcess(tmp_path / "data", extra_args=["--port", str(port)]).start()
        assert second.url == first.url
        expect(stream).to_have_attribute("data-state", "live", timeout=20_000)
        api.register("after-restart")
        expect(page.locator("#orch-list article.card")).to_have_count(2)
        expect(page.get_by_role("heading", name="after-restart", exact=True)).to_be_visible()
    finally:
        context.close()
        first.stop()
        if second is not None:
            second.stop()


def test_the_page_reloads_when_the_relay_cannot_resume(browser: Any, tmp_path: Path) -> None:
    """A relay restored from an older (or empty) log refuses the page's position
    with 409; the page must reload and follow from now rather than retry forever."""
    first = RelayProcess(tmp_path / "old").start()
    port = urlsplit(first.url).port
    second: RelayProcess | None = None
    context = browser.new_context(viewport=DESKTOP)
    try:
        api = Api(first.url)
        for i in range(5):
            api.register(f"old-{i}")
        page = context.new_page()
        page.goto(f"{first.url}/#orchestrators")
        stream = page.locator("#stream")
        expect(stream).to_have_attribute("data-state", "live")
        api.ok("POST", "/api/orchestrators/old-0/heartbeat")  # a position to resume from
        expect(page.locator("#orch-list article.card")).to_have_count(5)

        assert first.stop() == 0
        expect(stream).to_contain_text("Stream down")
        second = RelayProcess(tmp_path / "new", extra_args=["--port", str(port)]).start()
        api.register("fresh")

        expect(page.get_by_role("heading", name="fresh", exact=True)).to_be_visible(timeout=20_000)
        expect(page.locator("#orch-list article.card")).to_have_count(1)
        expect(stream).to_have_attribute("data-state", "live")
        api.register("after-reload")
        expect(page.locator("#orch-list article.card")).to_have_count(2)
    finally:
        context.close()
        first.stop()
        if second is not None:
            second.stop()
