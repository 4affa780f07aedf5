"""A sealed log built once per module by a real relay, and ``relay audit`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.http.helpers import managed, register_agent, register_orchestrator
from tests.support.client import Client
from tests.support.server import RelayProcess

SEAL_EVERY = 8


def busy_day(c: Client) -> None:
    """Registrations, heartbeats, reports, commands, removals: ~45 events, 5 seals."""
    for i in range(3):
        register_orchestrator(c, f"o{i}", hostname=f"h{i}")
        register_agent(c, f"a{i}", tags=[f"t{i}"])
    for round_ in range(3):
        for i in range(3):
            c.post(f"/api/orchestrators/o{i}/heartbeat")
            c.post(f"/api/agents/a{i}/heartbeat")
        c.patch("/api/orchestrators/o1/agents", {"agents": [managed(f"m{round_}")]})
    cmd = c.post("/api/orchestrators/o1/spawn", {"provider": "claude", "cwd": "w"}).json
    c.post(f"/api/orchestrators/o1/commands/{cmd['command']['id']}/result", {"status": "done"})
    c.post("/api/orchestrators/o2/actions", {"action": "shutdown"})
    c.delete("/api/agents/a2")
    c.delete("/api/orchestrators/o0")
    register_orchestrator(c, "o0", hostname="h0-again")
    for _ in range(4):
        c.post("/api/orchestrators/o1/heartbeat")


@pytest.fixture(scope="module")
def sealed_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped relay's data folder: a busy day, sealed every 8 events."""
    data = tmp_path_factory.mktemp("sealed") / "data"
    with RelayProcess(data, ["--seal-every", str(SEAL_EVERY)]) as relay:
        c = Client(relay.url)
        busy_day(c)
        c.close()
    return data


Audit = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def audit() -> Audit:
    """``audit(data_dir, *args)``: ``relay audit --data DIR ARGS`` in a child process."""

    def _run(data: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relay", "audit", "--data", str(data), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    return _run
