"""The README's curl tour runs as written against a real relay.

Every ``curl`` fails the script on an error status, so a tour step that the
relay refuses (a stale placeholder, a missing header) fails this test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

README = Path(__file__).parents[2] / "README.md"


def _tour() -> str:
    text = README.read_text()
    start = text.index("## A tour with curl")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None, "the README has no tour block"
    return block.group(1)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        # CI installs them (.ci/run) and sets RELAY_REQUIRE_TMUX: there this fails.
        if os.environ.get("RELAY_REQUIRE_TMUX"):
            pytest.fail(f"{', '.join(missing)} not installed")
        pytest.skip(f"{', '.join(missing)} not installed")
    tour = _tour()
    assert "<commandId>" not in tour and "$CID" in tour and 'Bearer $OT' in tour
    with RelayProcess(tmp_path / "data") as relay:
        script = tour.replace("R=http://127.0.0.1:4850", f"R={relay.url}", 1)
        assert script != tour
        prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
        done = subprocess.run(
            ["bash", "-c", prelude + script],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        c = Client(relay.url)
        try:
            commands = c.get("/api/orchestrators/gpu-1/commands").json
            assert [x["status"] for x in commands if x["kind"] == "spawn"] == ["done"], commands
            types = [e["type"] for e in c.get("/api/log?limit=1000").json["events"]]
            assert "OrchestratorHeartbeatReceived" in types
        finally:
            c.close()
