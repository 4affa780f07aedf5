"""Live output end to end: a printing provider in real tmux, a real host daemon, a real relay.

Counting is done at the relay (``/metrics``): pushes and heartbeats as it
answered them.
"""

from __future__ import annotations

from tests.host.conftest import requires_tmux, wait_for
from tests.output.conftest import OutputWorld

pytestmark = requires_tmux

HEARTBEAT_ROUTE = "/api/orchestrators/{id}/heartbeat"


def test_a_viewer_gets_the_screen_then_live_output(world: OutputWorld) -> None:
    host = world.start_host()
    aid = world.spawn_printer("printer", "tick 0.1")
    viewer = world.viewer(aid)
    fifos = world.state.with_name(world.state.name + ".output")
    try:
        snap = wait_for(lambda: viewer.named("snapshot"), 15, f"a snapshot\n{world.host_log()}")[0]
        assert "printer ready" in snap["data"]
        assert "\x1b[1m" in snap["data"] or "\x1b[32m" in snap["data"]  # colours kept
        assert (snap["cols"], snap["rows"]) == (200, 50)
        outputs = wait_for(lambda: viewer.named("output")[2:], 10, "live output")
        text = "".join(o["data"] for o in outputs)
        assert "\x1b[36mtick " in text  # raw, as printed: escapes and all
        ticks = [int(t.split()[0]) for t in text.split("tick ")[1:] if t.split()[0].isdigit()]
        assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)  # in order, once
        assert [p.stat().st_mode & 0o777 for p in fifos.iterdir()] == [0o600]
        # Stopped while watched: it ends cleanly (not killed after 15 s) and removes its FIFOs.
        assert host.stop() == 0
        assert not fifos.exists()
    finally:
        viewer.close()


def _heartbeats(world: OutputWorld) -> int:
    from tests.output.conftest import metric

    return metric(world.relay.url, HEARTBEAT_ROUTE, "POST", world.token)


def _after_heartbeats(world: OutputWorld, n: int) -> None:
    start = _heartbeats(world)
    wait_for(lambda: _heartbeats(world) >= start + n, 15, f"{n} heartbeats")


def test_output_flows_only_while_someone_watches(world: OutputWorld) -> None:
    world.start_host()
    aid = world.spawn_printer("printer", "tick 0.05")
    _after_heartbeats(world, 2)
    assert world.pushes() == 0  # printing all along, nobody watching: nothing sent
    viewer = world.viewer(aid)
    try:
        wait_for(lambda: viewer.named("output"), 15, "live output")
        assert world.pushes() > 0
    finally:
        viewer.close()
    wait_for(lambda: "live output: stopped printer" in world.host_log(), 10, "the host to stop")
    _after_heartbeats(world, 1)  # a push already on its way when the tap closed lands by now
    settled = world.pushes()
    _after_heartbeats(world, 2)
    assert world.pushes() == settled


def test_a_restarted_agent_is_shown_from_its_new_screen(world: OutputWorld) -> None:
    world.start_host()
    aid = world.spawn_printer("printer", "tick 0.1")
    viewer = world.viewer(aid)
    try:
        wait_for(lambda: "tick 3" in viewer.text(), 15, "a few ticks")
        world.api.settled(world.oid, world.api.act(world.oid, "restart", aid))
        wait_for(lambda: len(viewer.named("snapshot")) >= 2, 15, f"a new screen\n{world.host_log()}")
        # The new pane starts over (tick 1 again); what the viewer shows is that pane.
        wait_for(lambda: "tick 2" in viewer.text() and "tick 9" not in viewer.text()
                 and viewer.text().count("printer ready") == 1, 10, "the new pane's output")
    finally:
        viewer.close()
