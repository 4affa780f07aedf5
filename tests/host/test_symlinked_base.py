"""A host whose --base-dir is reached through a symlink still reports its agents.

The relay confines a managed agent's cwd to the registered baseDir by path
components (issue 12); the host resolves symlinks when it starts an agent.
So the host reports the cwd under the base dir as it registered it, or the
relay would refuse every report from such a host.
"""

from __future__ import annotations

from pathlib import Path

from tests.host.conftest import HostWorld, requires_tmux, wait_for

pytestmark = requires_tmux


def test_agents_under_a_symlinked_base_dir_are_reported(world: HostWorld, tmp_path: Path) -> None:
    link = tmp_path / "via-link"
    link.symlink_to(world.base)
    world.base = link  # the daemon is given (and registers) the symlinked path
    world.start_host()
    assert world.api.orchestrator(world.oid)["baseDir"] == str(link)  # type: ignore[index]
    cid = world.api.spawn(world.oid, provider="claude", cwd="proj/sub")
    cmd = world.api.settled(world.oid, cid)
    assert cmd["status"] == "done", (cmd, world.host_log())
    managed = wait_for(world.managed, 10, "the managed agent to be reported\n" + world.host_log())
    assert [m["cwd"] for m in managed] == [str(link / "proj" / "sub")]
    assert "could not report managed agents" not in world.host_log()
