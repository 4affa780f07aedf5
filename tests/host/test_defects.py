"""Host daemon defects a new user met (issue 12), reproduced with real tmux and processes."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from relay.host.config import list_dirs
from tests.host.conftest import HostWorld, requires_tmux, wait_for

pytestmark = requires_tmux


def test_the_dir_listing_never_follows_a_symlink_out_of_the_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "work" / "app").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "secrets").mkdir(parents=True)
    (base / "work" / "etc").symlink_to(outside)  # work/etc -> a folder outside
    (base / "elsewhere").symlink_to(outside)
    (base / "alias").symlink_to(base / "work")  # a symlink that stays inside is fine
    dirs, truncated = list_dirs(base)
    assert dirs == ["alias", "alias/app", "work", "work/app"]
    assert truncated is False

    # What a real `relay host` would register.
    out = subprocess.run(
        [sys.executable, "-m", "relay.host", "--once", "--relay", "http://127.0.0.1:9",
         "--id", "h1", "--base-dir", str(base), "--provider", "claude=claude",
         "--state", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(out.stdout)["register"]["meta"]["dirs"] == dirs


def test_a_provider_that_exits_at_once_fails_with_its_status_and_last_lines(
    world: HostWorld,
) -> None:
    crash = shlex.join([
        sys.executable, "-c",
        "import sys; print('starting codex'); "
        "print('error: OPENAI_API_KEY is not set', file=sys.stderr); sys.exit(3)",
    ])
    # The default grace of the tests is short; a crash on a busy machine needs longer.
    world.start_host(extra=["--provider", f"codex={crash}", "--start-grace", "3"],
                     providers=("claude",))
    cid = world.api.spawn(world.oid, provider="codex", label="dies")
    cmd = world.api.settled(world.oid, cid)
    assert cmd["status"] == "failed", (cmd, world.host_log())
    error = cmd["result"]["error"]
    # tmux 3.3 sometimes marks a pane dead without recording its exit status (even
    # after the daemon's 2 s look-again); the daemon then says so rather than guess.
    assert "status 3" in error or "an unknown status" in error, error
    assert "starting codex" in error
    assert "error: OPENAI_API_KEY is not set" in error
    # Nothing is left behind: no session, no managed agent (the shorter list
    # may reach the relay just after the result).
    assert world.tmux.sessions() == set()
    wait_for(lambda: world.managed() == [], 10, "the dead agent to leave the list")
    # The daemon's log has it too, as one line: the provider's newlines are
    # escaped, so what a provider prints can never forge a log line.
    line = next(x for x in world.host_log().splitlines() if f"command {cid} failed" in x)
    assert "starting codex\\nerror: OPENAI_API_KEY is not set" in line
