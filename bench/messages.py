"""Messaging benchmark (issue 9). Not a test: it prints figures.

Run from the repository root (about a minute on the 2-core machine)::

    .venv/bin/python bench/messages.py                      # 64 agents, 10 s, 3 runs
    .venv/bin/python bench/messages.py --agents 64 --seconds 20 --runs 5

A relay in its own process (``relay serve`` on loopback, SQLite, a fresh data
folder per run) and, in this process, ``--agents`` concurrent agents, each
on its own keep-alive connection (aiohttp client). Every agent loops::

    send a message to the next agent (a ring)  POST /api/messages
    read its own inbox                          GET  /api/agents/{id}/inbox
    claim the oldest message there              POST /api/messages/{id}/claim
    ack it                                      POST /api/messages/{id}/ack

so every message goes the whole way: send → inbox → claim → ack, each step a
durable write (or a read of the read models) answered after it is applied.
Figures over the measured window after a warm-up: messages acked per second,
HTTP requests per second, latency from a message's send (answered) to its ack
(answered) in ms (p50/p99), claim conflicts (expected 0: each inbox has one
consumer), and the CPU of the server and of this client (% of one core): on
two cores a client near 100% means the figure is the client's limit, not the
relay's. Each figure is the median of
``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Server, cpu_seconds


class Run:
    """Counters of one measured run (only the window after the warm-up counts)."""

    def __init__(self) -> None:
        self.measuring = False
        self.acked = 0
        self.requests = 0
        self.conflicts = 0
        self.latencies: list[float] = []
        self.sent_at: dict[str, float] = {}


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as r:
        return r.status, orjson.loads(await r.read())


async def agent(base: str, me: str, peer: str, run: Run, stop: asyncio.Event) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        while not stop.is_set():
            status, m = await _post(session, f"{base}/api/messages", {"from": me, "to": peer, "body": "work"})
            assert status == 201, m
            run.sent_at[m["id"]] = time.perf_counter()
            async with session.get(f"{base}/api/agents/{me}/inbox?limit=1") as r:
                inbox = orjson.loads(await r.read())
            done = 2
            if inbox:
                mid = inbox[0]["id"]
                status, claimed = await _post(
                    session, f"{base}/api/messages/{mid}/claim", {"agentId": me, "leaseSeconds": 60}
                )
                done += 1
                if status == 200:
                    status, acked = await _post(
                        session,
                        f"{base}/api/messages/{mid}/ack",
                        {"agentId": me, "claimId": claimed["claimId"]},
                    )
                    done += 1
                    assert status == 200, acked
                    sent = run.sent_at.pop(mid, None)
                    if run.measuring:
                        run.acked += 1
                        if sent is not None:
                            run.latencies.append((time.perf_counter() - sent) * 1000)
                elif run.measuring:
                    run.conflicts += 1
            if run.measuring:
                run.requests += done


async def measure(base: str, pid: int, agents: int, warmup: float, seconds: float) -> dict[str, float]:
    names = [f"agent-{i:03d}" for i in range(agents)]
    async with aiohttp.ClientSession() as session:
        for name in names:
            status, body = await _post(session, f"{base}/api/agents", {"id": name})
            assert status == 201, body
    run = Run()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(agent(base, name, names[(i + 1) % agents], run, stop))
        for i, name in enumerate(names)
    ]
    await asyncio.sleep(warmup)
    cpu0, t0, me0 = cpu_seconds(pid), time.perf_counter(), time.process_time()
    run.measuring = True
    await asyncio.sleep(seconds)
    run.measuring = False
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    client_cpu = time.process_time() - me0
    stop.set()
    await asyncio.gather(*tasks)
    lat = sorted(run.latencies) or [float("nan")]
    return {
        "messages_per_s": run.acked / elapsed,
        "requests_per_s": run.requests / elapsed,
        "latency_p50_ms": lat[len(lat) // 2],
        "latency_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "claim_conflicts": run.conflicts,
        "server_cpu_pct": 100 * cpu / elapsed,
        "client_cpu_pct": 100 * client_cpu / elapsed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    results: list[dict[str, float]] = []
    for i in range(args.runs):
        tmp = Path(tempfile.mkdtemp(prefix="relay-bench-messages-"))
        try:
            with Server(tmp / "data") as server:
                r = asyncio.run(measure(server.url, server.pid, args.agents, args.warmup, args.seconds))
            results.append(r)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in r.items()), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmedians of {args.runs} runs, {args.agents} agents, {args.seconds:g} s each:")
    for key in results[0]:
        print(f"  {key:16} {statistics.median(r[key] for r in results):,.1f}")


if __name__ == "__main__":
    main()
