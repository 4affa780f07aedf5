"""Load generators for the ingest benchmark, each in a process of its own.

``wrk`` (C, event-driven, keep-alive) is preferred: it costs the 2-core
machine far less CPU per request than any Python client, so the figure is
the server's and not the client's. Without wrk on PATH this module is itself
a fallback client: ``python bench/loadgen.py URL ...`` runs aiohttp with one
keep-alive connection per simulated client and prints one JSON line.

Every run is bounded in time and sends only to the loopback URL it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

WRK_SCRIPT = r"""
local n, prefix, i = 1000, "o", 0
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
init = function(args)
  n = tonumber(args[1]); prefix = args[2]
  i = math.random(0, n - 1)
end
request = function()
  i = (i + 1) % n
  return wrk.format(nil, "/api/orchestrators/" .. prefix .. i .. "/heartbeat")
end
done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50=%d p99=%d\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
_RESULT = re.compile(r"RESULT (.*)")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def heartbeat_load(
    url: str, ids: int, prefix: str, connections: int, seconds: float, client: str, threads: int = 1
) -> dict[str, Any]:
    """POST heartbeats round-robin over ``ids`` orchestrators for ``seconds``.

    Returns requests answered, how many were 2xx (acknowledged), errors,
    latency p50/p99 in ms, the run's duration and the client's CPU seconds.
    """
    cpu0 = _children_cpu()
    if client == "wrk":
        out = _run_wrk(url, ids, prefix, connections, seconds, threads)
    else:
        out = _run_python(url, ids, prefix, connections, seconds)
    out["client_cpu_s"] = _children_cpu() - cpu0
    out["client"] = client
    return out


def _run_wrk(
    url: str, ids: int, prefix: str, connections: int, seconds: float, threads: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
        script = f.name
    try:
        proc = subprocess.run(
            [
                "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
                "-s", script, url, "--", str(ids), prefix,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        os.unlink(script)
    m = _RESULT.search(proc.stdout)
    if m is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    kv = dict(p.split("=") for p in m.group(1).split())
    v = {k: int(x) for k, x in kv.items()}
    errors = v["connect"] + v["read"] + v["write"] + v["timeout"]
    return {
        "requests": v["requests"],
        "ok": v["requests"] - v["status"],
        "non2xx": v["status"],
        "socket_errors": errors,
        "seconds": v["duration_us"] / 1e6,
        "p50_ms": v["p50"] / 1000,
        "p99_ms": v["p99"] / 1000,
    }


def _run_python(url: str, ids: int, prefix: str, connections: int, seconds: float) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable, str(Path(__file__).resolve()), url,
            "--ids", str(ids), "--prefix", prefix,
            "--connections", str(connections), "--seconds", str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"python load generator failed:\n{proc.stdout}\n{proc.stderr}")
    return dict(orjson.loads(lines[-1]))


# -- the aiohttp fallback client (runs in its own process) ---------------------------


async def _aiohttp_main(url: str, ids: int, prefix: str, connections: int, seconds: float) -> None:
    import aiohttp

    latencies: list[float] = []
    counts = {"requests": 0, "ok": 0, "non2xx": 0, "socket_errors": 0}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    headers = {"Content-Type": "application/json"}

    async def one_client(k: int, session: aiohttp.ClientSession) -> None:
        i = k * (ids // max(connections, 1))
        while time.perf_counter() < deadline:
            i = (i + 1) % ids
            t0 = time.perf_counter()
            try:
                async with session.post(
                    f"{url}/api/orchestrators/{prefix}{i}/heartbeat", data=b"{}", headers=headers
                ) as resp:
                    await resp.read()
                    status = resp.status
            except aiohttp.ClientError:
                counts["socket_errors"] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            counts["requests"] += 1
            counts["ok" if 200 <= status < 300 else "non2xx"] += 1

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one_client(k, session) for k in range(connections)))
    elapsed = time.perf_counter() - t0
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    print(orjson.dumps({**counts, "seconds": elapsed, "p50_ms": q(50), "p99_ms": q(99)}).decode())


def main() -> None:
    p = argparse.ArgumentParser(description="aiohttp heartbeat load generator (wrk fallback)")
    p.add_argument("url")
    p.add_argument("--ids", type=int, default=1000)
    p.add_argument("--prefix", default="o")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    if not a.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.exit("loadgen: loopback URLs only")
    asyncio.run(_aiohttp_main(a.url, a.ids, a.prefix, a.connections, min(a.seconds, 120.0)))


if __name__ == "__main__":
    main()
