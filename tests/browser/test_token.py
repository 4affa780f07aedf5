"""A relay started with --token: the page asks once, keeps it for the tab, and stays live."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.support import Api, playwright_api

pytestmark = pytest.mark.browser
expect = playwright_api().expect

RELAY_TOKEN = "s3cret-token-for-tests"
RELAY_ARGS = ["--token", RELAY_TOKEN]


def test_the_page_asks_for_the_token_once_and_then_works(dashboard: Any, api: Api) -> None:
    api.register("early-host")  # there before the page: must come with the first snapshot
    page = dashboard.open(live=False)
    form = page.locator("#auth")
    expect(form).to_be_visible()
    expect(page.get_by_label("Token", exact=True)).to_be_focused()

    page.get_by_label("Token", exact=True).fill("wrong")
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#auth-error")).to_have_text("That token was not accepted. Check it and try again.")

    page.get_by_label("Token", exact=True).fill(RELAY_TOKEN)
    page.get_by_role("button", name="Use token").click()
    expect(form).to_be_hidden()
    dashboard.expect_live()
    expect(dashboard.card("early-host")).to_be_visible()

    # Live through the token-carrying stream.
    api.register("secured-host")
    expect(dashboard.card("secured-host")).to_be_visible()

    # Kept for the session: a reload does not ask again.
    page.reload()
    dashboard.expect_live()
    expect(form).to_be_hidden()
    expect(dashboard.card("secured-host")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('relay.token')") == RELAY_TOKEN


def test_unauthenticated_calls_are_refused(api: Api) -> None:
    """The page's token form is only worth having if the relay really asks."""
    status, body = Api(api.base_url).call("GET", "/api/orchestrators")
    assert status == 401
    assert body["error"]
