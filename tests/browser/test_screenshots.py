"""Keeps make_screenshots.py working: every view renders at both sizes.

Writes into a temporary folder; run ``python -m tests.browser.make_screenshots``
to refresh docs/screenshots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.make_screenshots import populate, shoot
from tests.browser.support import Api

pytestmark = pytest.mark.browser


def test_every_view_renders_at_desktop_and_phone_sizes(
    browser: Any, api: Api, relay: Any, tmp_path: Path
) -> None:
    fleet = populate(api)
    written = shoot(browser, relay.url, tmp_path, fleet)
    assert len(written) == 14
    for path in written:
        assert path.stat().st_size > 10_000, path
