"""Needs-input on the host: what one look costs, and how fast an answer is typed (issue 16).

On a private tmux socket with ``--agents`` sessions (a quiet program each):

- ``panes``: ``Tmux.panes()``, the call the agent watcher already makes every
  ``--check-every``: the yardstick;
- ``activity``: ``Tmux.activity()``, the one call the attention watcher adds
  per look for every agent (ADR 0032);
- ``tick quiet``: a whole ``AttentionWatcher.tick()`` when no agent has been
  quiet for ``--idle-after`` yet (the steady state: one ``list-panes``);
- ``tick all idle``: a tick in which every agent crosses ``--idle-after`` at
  once (a ``capture-pane`` each: the worst case; the relay is not called);
- ``send``: ``Tmux.send_text`` of a short answer until the pane's program has
  read the line (written to a file), p50/p99.

Run: ``.venv/bin/python bench/attention.py`` (about 30 s; ``--agents N``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import load_average, machine, pct

from relay.host.attention import AttentionWatcher, Tracker
from relay.host.client import RelayClient
from relay.host.config import HostConfig, ProviderConfig
from relay.host.context import HostContext
from relay.host.crashloop import CrashLoopPolicy
from relay.host.lifecycle import LifecycleConfig
from relay.host.state import ManagedAgent, StateFile
from relay.host.tmux import Tmux

READER = """
import os, sys
out = sys.argv[1]
for line in sys.stdin:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, line.encode())
    os.close(fd)
"""


class NoRelay:
    """Registration as the watcher sees it, without a relay: calls are dropped."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.generation = 0
        self.relay_agents: dict[str, Any] = {}

    async def call(self, _: Any) -> None:
        return None


async def timed(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main(agents: int, runs: int, sends: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="relay-bench-attention-"))
    tmux = Tmux(f"relay-bench-{uuid.uuid4().hex[:8]}")
    spec = root / "launch"
    try:
        state = []
        for i in range(agents):
            name = f"relay-a{i}"
            out = root / f"a{i}.txt"
            await tmux.start(name, root, [sys.executable, "-c", READER, str(out)], dict(os.environ), spec)
            state.append(ManagedAgent(f"a{i}", "claude", name, str(root), "guarded", 0))
        config = HostConfig(
            relay_url="http://127.0.0.1:9", orchestrator_id="bench", hostname="bench",
            base_dir=root, providers={"claude": ProviderConfig(("true",))},
            state_path=root / "state.json", check_every=1.0, idle_after=3600.0,
        )
        ctx = HostContext(
            config=config, lifecycle=LifecycleConfig(), tmux=tmux,
            state_file=StateFile(config.state_path),
            client=RelayClient(config.relay_url, "bench"), crash=CrashLoopPolicy(5, 60),
        )
        ctx.state.agents = state
        watcher = AttentionWatcher(ctx, NoRelay())  # type: ignore[arg-type]
        results: dict[str, list[float]] = {}
        results["panes"] = await timed(tmux.panes, runs)
        results["activity"] = await timed(tmux.activity, runs)
        results["tick quiet"] = await timed(watcher.tick, runs)

        async def all_idle() -> None:
            watcher.trackers = {a.agent_id: Tracker() for a in state}
            object.__setattr__(config, "idle_after", 0.001)
            await watcher.tick()
            object.__setattr__(config, "idle_after", 3600.0)

        results["tick all idle"] = await timed(all_idle, max(3, runs // 4))
        target = root / "a0.txt"

        async def send() -> None:
            before = target.stat().st_size if target.exists() else 0
            await tmux.send_text("relay-a0", "y $(reboot) 'q' é", enter=True)
            while not target.exists() or target.stat().st_size == before:
                await asyncio.sleep(0.0005)

        results["send"] = await timed(send, sends)
        print(machine())
        print(f"load average before: {load_average()}")
        print(f"{agents} agents in tmux; milliseconds, median (p99) of {runs} runs")
        for name, values in results.items():
            print(f"  {name:15s} {statistics.median(values):8.2f} ({pct(values, 99):.2f})")
        ratio = statistics.median(results["activity"]) / statistics.median(results["panes"])
        print(f"  activity / panes: {ratio:.2f}")
        print(f"load average after: {load_average()}")
    finally:
        await tmux.kill_server()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--sends", type=int, default=50)
    a = p.parse_args()
    asyncio.run(main(a.agents, a.runs, a.sends))
