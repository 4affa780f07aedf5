"""Placement by capacity on 1,000 hosts: ``POST /api/agents/spawn`` latency against the old choice.

Issue 15 replaced "the first online host by hostname" with a pure placement
over every host (provider, selector, free capacity, least loaded). This
measures what that costs a spawn, in the same run and on the same relay:

- ``new``: ``POST /api/agents/spawn`` as served (relay/domain/placement.py);
- ``old``: ``POST /bench/spawn-first``, the handler as it was before issue 15,
  inlined below: the first online host offering the provider in hostname
  order, then the same ``_spawn`` write path.

The relay runs in a child process (this script with ``--serve``) on a real
loopback socket; the parent times requests on one keep-alive connection,
alternating old and new in blocks so that the machine's load hits both alike.
1,000 hosts register with ``maxAgents`` and two labels and heartbeat a load,
so the new path has real work to do. After each timed spawn the host's result
is posted (untimed), so no host fills up with pending spawns, and
``--beats-between`` random hosts heartbeat a new load (untimed), so the
placement index (relay/projections/placement.py) keeps moving under the
spawns as it would in a live fleet.

The machine is shared and noisy, so the whole comparison runs ``--repeats``
times on the same relay; each repeat gives its own p50 ratio (old and new
measured side by side), and the verdict is the median of those ratios.

Run: ``.venv/bin/python bench/placement.py`` (about two minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, Conn, load_average, machine, median, pct


def serve(data: Path) -> None:
    """The child: a relay with one extra route, the old choice (the baseline)."""
    from aiohttp import web

    from relay.config import Settings
    from relay.domain.errors import ConflictError
    from relay.http import parse, routes
    from relay.http.app import create_app
    from relay.http.auth import principal
    from relay.wire import shapes as w

    async def spawn_first(request: web.Request) -> web.Response:
        """``spawn_anywhere`` before issue 15, verbatim but for the name."""
        s = routes.svc(request)
        req = await parse.body(request, w.SpawnRequest)
        target = next(
            (
                o
                for o in s.rm.orchestrators_sorted()
                if o["status"] == "online" and req.provider in o["providers"]
            ),
            None,
        )
        if target is None:
            raise ConflictError(f"no online orchestrator offers provider {req.provider!r}")
        command = await routes._spawn(s, target["id"], req, principal(request))
        return routes.json(
            {"ok": True, "orchestratorId": target["id"], "provider": req.provider,
             "command": command},
            status=202,
        )

    async def main() -> None:
        logging.basicConfig(level=logging.WARNING)
        settings = Settings(data_dir=data, host="127.0.0.1", port=0)
        app = create_app(settings)
        app.router.add_post("/bench/spawn-first", spawn_first)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def measure(args: argparse.Namespace, port: int) -> list[dict[str, list[float]]]:
    conn = Conn(port)
    rng = random.Random(15)
    ids = [f"h{i:04d}" for i in range(args.hosts)]
    t = time.perf_counter()
    for i, oid in enumerate(ids):
        conn.ok("POST", "/api/orchestrators", {
            "id": oid, "hostname": f"host-{i:05d}", "baseDir": "/srv/work",
            "providers": ["claude", "codex"] if i % 3 else ["claude"],
            "maxAgents": 8, "labels": {"zone": "ab"[i % 2], "gpu": "yes" if i % 5 == 0 else "no"},
        })
        conn.ok("POST", f"/api/orchestrators/{oid}/heartbeat",
                {"load": {"activeAgents": rng.randrange(0, 8)}})
    print(f"registered {args.hosts} hosts with load in {time.perf_counter() - t:.1f} s", flush=True)

    paths = {"old": "/bench/spawn-first", "new": "/api/agents/spawn"}

    def spawn(path: str, body: dict[str, Any]) -> float:
        """One timed spawn; then, untimed, its host reports the command done and others beat."""
        status, data, seconds = conn.request("POST", path, body)
        if status != 202:
            raise RuntimeError(f"POST {path} -> {status}: {data[:200]!r}")
        answer = orjson.loads(data)
        oid, cid = answer["orchestratorId"], answer["command"]["id"]
        conn.ok("POST", f"/api/orchestrators/{oid}/commands/{cid}/result", {"status": "done"})
        for _ in range(args.beats_between):
            conn.ok("POST", f"/api/orchestrators/{rng.choice(ids)}/heartbeat",
                    {"load": {"activeAgents": rng.randrange(0, 8)}})
        return seconds

    for _ in range(args.warmup):
        for path in paths.values():
            spawn(path, {"provider": "claude"})
    runs: list[dict[str, list[float]]] = []
    for repeat in range(args.repeats):
        times: dict[str, list[float]] = {"old": [], "new": []}
        for block in range(args.blocks):
            order = ["old", "new"] if block % 2 == 0 else ["new", "old"]
            for name in order:
                for k in range(args.per_block):
                    body: dict[str, Any] = {"provider": "codex" if k % 2 else "claude"}
                    if name == "new" and k % 4 == 0:
                        body["selector"] = {"zone": "b"}
                    times[name].append(spawn(paths[name], body))
        runs.append(times)
        print(f"  repeat {repeat + 1}: old p50 {pct(times['old'], 50) * 1000:.2f} ms, "
              f"new p50 {pct(times['new'], 50) * 1000:.2f} ms, "
              f"ratio {pct(times['new'], 50) / pct(times['old'], 50):.2f}x", flush=True)
    conn.close()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--per-block", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--beats-between", type=int, default=3,
                        help="untimed load-changing heartbeats after each spawn")
    parser.add_argument("--serve", metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return
    data = Path(tempfile.mkdtemp(prefix="relay-placement-"))
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(data)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the relay did not start: {line!r}")
        runs = measure(args, int(line.split()[1]))
    finally:
        child.terminate()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
        shutil.rmtree(data, ignore_errors=True)
    print(f"{machine()}, load average {load_average()}")
    print(f"POST spawn on {args.hosts} hosts, {args.repeats} repeats of {args.blocks} alternating "
          f"blocks ({args.blocks // 2 * args.per_block} requests each way per repeat), "
          f"{args.beats_between} load heartbeats after each spawn")
    for name in ("old", "new"):
        p50s = [pct(t[name], 50) * 1000 for t in runs]
        p99s = [pct(t[name], 99) * 1000 for t in runs]
        print(f"  {name:>3}: p50 median {median(p50s):.2f} ms (repeats {_list(p50s)}), "
              f"p99 median {median(p99s):.2f} ms")
    ratios = [pct(t["new"], 50) / pct(t["old"], 50) for t in runs]
    p99r = [pct(t["new"], 99) / pct(t["old"], 99) for t in runs]
    print(f"  new / old p50 per repeat: {_list(ratios, 'x')}; median {median(ratios):.2f}x "
          f"(goal: within 1.2x); p99 median {median(p99r):.2f}x")


def _list(values: list[float], unit: str = "") -> str:
    return " ".join(f"{v:.2f}{unit}" for v in values)


if __name__ == "__main__":
    main()
