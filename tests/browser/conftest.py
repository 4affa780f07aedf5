"""Fixtures for the dashboard tests in a real headless Chromium.

Each test module gets its own relay (``python -m relay serve`` in a child
process) so that modules can start it with the options they need, e.g. a fast
reaper; each test gets a fresh browser context, so no state leaks between them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, DESKTOP, Api, playwright_api
from tests.support.server import RelayProcess


@pytest.fixture(scope="session")
def pw() -> Any:
    """The playwright.sync_api module (skips when it or Chromium is missing)."""
    api = playwright_api()
    # A loaded CI machine is slower than a laptop; waits stay waits, just longer.
    api.expect.set_options(timeout=10_000)
    return api


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
    """Debian's Chromium driven by Playwright: no browser download involved.

    Module scope, not session: Playwright's sync API keeps an event loop
    running on the main thread while it is open, and later test modules call
    ``asyncio.run`` there.
    """
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def relay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay for this module; a module sets RELAY_ARGS to pass options."""
    args = list(getattr(request.module, "RELAY_ARGS", []))
    data = tmp_path_factory.mktemp("relay-data")
    with RelayProcess(data, extra_args=args) as r:
        yield r


@pytest.fixture
def api(relay: RelayProcess, request: pytest.FixtureRequest) -> Api:
    """A client for the module's relay (with the module's RELAY_TOKEN, if any)."""
    return Api(relay.url, getattr(request.module, "RELAY_TOKEN", None))


class Dashboard:
    """A page showing the dashboard, plus the JavaScript errors it raised."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def open(self, view: str = "orchestrators", live: bool = True) -> Any:
        """Load the page and, by default, wait until its stream is live."""
        self.page.goto(f"{self.base_url}/#{view}")
        if live:
            self.expect_live()
        return self.page

    def expect_live(self) -> None:
        """The stream indicator says the page is up to date."""
        from playwright.sync_api import expect

        expect(self.page.locator("#stream")).to_have_attribute("data-state", "live")

    def card(self, hostname: str) -> Any:
        """The orchestrator card whose heading is exactly ``hostname``."""
        return self.page.locator("#orch-list article.card").filter(
            has=self.page.get_by_role("heading", name=hostname, exact=True)
        )

    def goto_view(self, name: str) -> None:
        """Use the navigation, as a person would."""
        self.page.locator(".tabs").get_by_role("link", name=re.compile(f"^{name}", re.I)).click()


@pytest.fixture
def dashboard(browser: Any, relay: RelayProcess) -> Iterator[Dashboard]:
    """A fresh 1280x800 browser context on the module's relay."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    d = Dashboard(page, relay.url)
    yield d
    context.close()
    assert not d.errors, f"JavaScript errors on the page: {d.errors}"


def screenshot_dir() -> Path:
    """Where make_screenshots.py writes by default."""
    return Path(__file__).resolve().parents[2] / "docs" / "screenshots"
