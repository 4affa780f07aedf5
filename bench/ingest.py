"""Core ingest and query benchmark of relay (issue 2). Not a test: it prints figures.

Run from the repository root (2-4 minutes on the 2-core machine)::

    .venv/bin/python bench/ingest.py            # every section, 3 runs each
    .venv/bin/python bench/ingest.py --only ingest,size --runs 5

Sections, each against a real ``relay serve`` child process on loopback with
its own temporary data folder (removed afterwards unless ``--keep``):

ingest   acknowledged (2xx) heartbeats/s over HTTP from 64 concurrent keep-alive
         clients (wrk in its own process, or the aiohttp fallback in
         bench/loadgen.py), p50/p99 latency, the server's CPU, and beside it,
         in the same run and on the same disk, the library's own rate saving
         one heartbeat per ``save()`` (bench/baseline.py). Targets: >= 3,000/s
         and >= 1.0x the baseline.
list     ``GET /api/orchestrators`` with 1,000 orchestrators x 5 managed agents,
         one keep-alive client, p50 <= 5 ms.
long     heartbeat p50 on an orchestrator with 100,000 earlier heartbeats vs a
         freshly registered one, interleaved on one connection: ratio <= 1.2.
startup  a 1,000,000-event log: process start to the URL line (and to the first
         answered request) with the read-model checkpoint, <= 2 s; also the
         rebuild from position 0 without one.
size     bytes of stored state+topic of a heartbeat event, <= 120.

Every figure is the median of ``--runs`` runs; ratios are taken within a run
(against that run's own baseline), then the median of the ratios is quoted,
because these machines are noisy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from baseline import one_per_save
from builders import append_heartbeats, build_big_log, build_long_stream
from harness import (
    Conn,
    Server,
    count_topic,
    cpu_seconds,
    load_average,
    log_head,
    machine,
    median,
    pct,
    register_orchestrators,
    settled_head,
    stored_sizes,
)
from loadgen import have_wrk, heartbeat_load

from relay.config import Settings

SECTIONS = ("ingest", "list", "long", "startup", "size")
CHECKPOINT_FILE = "readmodels.json"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- ingest ----------------------------------------------------------------------------


def bench_ingest(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for r in range(a.runs):
        base = one_per_save(tmp / f"ingest-{r}" / "baseline", a.baseline_seconds)
        say(f"  run {r + 1}: library one-per-save {base['rate']:,.0f}/s")
        data = tmp / f"ingest-{r}" / "relay"
        with Server(data) as srv:
            ids = register_orchestrators(srv.port, a.fleet)
            # A short warm-up (not counted): first requests pay for imports and page cache.
            heartbeat_load(srv.url, len(ids), "o", a.connections, 1, a.client)
            head0 = settled_head(data)  # the warm-up's in-flight heartbeats have landed
            cpu0 = cpu_seconds(srv.pid)
            load = heartbeat_load(srv.url, len(ids), "o", a.connections, a.seconds, a.client)
            cpu1 = cpu_seconds(srv.pid)
            head1 = settled_head(data)
        rate = load["ok"] / load["seconds"]
        appended = count_topic(data, "OrchestratorHeartbeatReceived", head0, head1)
        run = {
            "baseline": base,
            "http": load,
            "acked_per_s": rate,
            "ratio": rate / base["rate"],
            "appended": appended,
            "server_cpu": (cpu1 - cpu0) / load["seconds"],
            "cpu_us_per_ack": (cpu1 - cpu0) / max(load["ok"], 1) * 1e6,
            "client_cpu": load["client_cpu_s"] / load["seconds"],
        }
        # Every acknowledged heartbeat is in the log; at most the in-flight ones beyond.
        run["log_check"] = load["ok"] <= appended <= load["ok"] + a.connections
        runs.append(run)
        say(
            f"  run {r + 1}: relay {rate:,.0f} acked/s, p50 {load['p50_ms']:.1f} ms, "
            f"p99 {load['p99_ms']:.1f} ms, non-2xx {load['non2xx']}, ratio {run['ratio']:.2f}x, "
            f"server CPU {run['server_cpu']:.0%} ({run['cpu_us_per_ack']:.0f} µs/ack), "
            f"log check {'ok' if run['log_check'] else 'FAILED'}"
        )
    return {
        "runs": runs,
        "acked_per_s": median([x["acked_per_s"] for x in runs]),
        "p50_ms": median([x["http"]["p50_ms"] for x in runs]),
        "p99_ms": median([x["http"]["p99_ms"] for x in runs]),
        "baseline_per_s": median([x["baseline"]["rate"] for x in runs]),
        "ratio": median([x["ratio"] for x in runs]),
        "server_cpu": median([x["server_cpu"] for x in runs]),
        "cpu_us_per_ack": median([x["cpu_us_per_ack"] for x in runs]),
        "client_cpu": median([x["client_cpu"] for x in runs]),
        "non2xx": sum(x["http"]["non2xx"] + x["http"]["socket_errors"] for x in runs),
        "log_check": all(x["log_check"] for x in runs),
        "client": a.client,
    }


# -- list --------------------------------------------------------------------------------


def bench_list(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    data = tmp / "list"
    with Server(data) as srv:
        register_orchestrators(srv.port, a.fleet, managed=5)
        conn = Conn(srv.port)
        body = conn.ok("GET", "/api/orchestrators")
        listed = orjson.loads(body)
        assert len(listed) == a.fleet and all(len(o["managedAgents"]) == 5 for o in listed)
        for _ in range(20):
            conn.ok("GET", "/api/orchestrators")
        rounds = []
        for r in range(a.runs):
            times = []
            for _ in range(a.list_requests):
                status, got, dt = conn.request("GET", "/api/orchestrators")
                assert status == 200 and len(got) == len(body), (status, len(got))
                times.append(dt * 1000)
            rounds.append({"p50_ms": pct(times, 50), "p99_ms": pct(times, 99)})
            say(f"  run {r + 1}: p50 {rounds[-1]['p50_ms']:.2f} ms, p99 {rounds[-1]['p99_ms']:.2f} ms")
        conn.close()
    return {
        "runs": rounds,
        "bytes": len(body),
        "p50_ms": median([x["p50_ms"] for x in rounds]),
        "p99_ms": median([x["p99_ms"] for x in rounds]),
    }


# -- long stream ---------------------------------------------------------------------


def bench_long(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    data = tmp / "long"
    built = build_long_stream(data, "long", a.long)
    say(f"  built {a.long:,} heartbeats on one orchestrator in {built:.1f} s")
    rounds = []
    with Server(data, log_level="INFO") as srv:
        conn = Conn(srv.port)
        _, _, cold = conn.request("POST", "/api/orchestrators/long/heartbeat", {})
        for r in range(a.runs):
            fresh = f"fresh-{r}"
            conn.ok("POST", "/api/orchestrators", {"id": fresh, "hostname": fresh, "baseDir": "/srv"})
            long_t: list[float] = []
            fresh_t: list[float] = []
            for i in range(a.long_requests):
                pair = [("long", long_t), (fresh, fresh_t)]
                if i % 2:
                    pair.reverse()
                for oid, sink in pair:
                    status, _, dt = conn.request("POST", f"/api/orchestrators/{oid}/heartbeat", {})
                    assert status == 200, status
                    sink.append(dt * 1000)
            lp, fp = pct(long_t, 50), pct(fresh_t, 50)
            rounds.append({"long_p50_ms": lp, "fresh_p50_ms": fp, "ratio": lp / fp})
            say(f"  run {r + 1}: long p50 {lp:.2f} ms, fresh p50 {fp:.2f} ms, ratio {lp / fp:.2f}")
        conn.close()
        loaded = srv.load_line()
    return {
        "runs": rounds,
        "build_s": built,
        "first_heartbeat_after_start_ms": cold * 1000,
        "start_load": loaded,
        "long_p50_ms": median([x["long_p50_ms"] for x in rounds]),
        "fresh_p50_ms": median([x["fresh_p50_ms"] for x in rounds]),
        "ratio": median([x["ratio"] for x in rounds]),
    }


# -- start-up ----------------------------------------------------------------------------


def _timed_start(data: Path) -> dict[str, Any]:
    srv = Server(data, log_level="INFO")
    srv.start()
    try:
        conn = Conn(srv.port)
        deadline = time.perf_counter() + 30
        while True:
            status, _, _ = conn.request("GET", "/api/orchestrators")
            if status == 200 or time.perf_counter() > deadline:
                break
        first = time.perf_counter() - srv.started_at
        conn.close()
    finally:
        srv.stop()
    return {"url_s": srv.listening_after, "first_request_s": first, "load": srv.load_line()}


def bench_startup(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    empty = [_timed_start(tmp / f"empty-{r}") for r in range(a.runs)]
    data = tmp / "startup"
    built = build_big_log(data, a.events)
    head = log_head(data)
    say(f"  built a {head:,}-event log in {built:.1f} s")
    rebuilds = []
    for r in range(a.runs):
        (data / CHECKPOINT_FILE).unlink(missing_ok=True)
        rebuilds.append(_timed_start(data))  # stopping it writes the checkpoint
        say(f"  run {r + 1}: no checkpoint, URL after {rebuilds[-1]['url_s']:.2f} s ({rebuilds[-1]['load']})")
    starts = []
    for r in range(a.runs):
        assert (data / CHECKPOINT_FILE).exists(), "the relay left no checkpoint on SIGTERM"
        starts.append(_timed_start(data))
        say(
            f"  run {r + 1}: with checkpoint, URL after {starts[-1]['url_s']:.2f} s, "
            f"first answer after {starts[-1]['first_request_s']:.2f} s ({starts[-1]['load']})"
        )
    # The worst case after a crash (kill -9): the newest checkpoint is up to
    # --checkpoint-every events behind the log, and that tail is folded at start.
    tail = Settings().checkpoint_every - 1
    behind = []
    for r in range(a.runs):
        append_heartbeats(data, tail, f"tail{r}")
        behind.append(_timed_start(data))
        say(
            f"  run {r + 1}: checkpoint {tail:,} events behind, first answer after "
            f"{behind[-1]['first_request_s']:.2f} s ({behind[-1]['load']})"
        )
    return {
        "events": head,
        "build_s": built,
        "tail": tail,
        "behind_first_request_s": median([x["first_request_s"] for x in behind]),
        "behind_load_s": median([x["load"][2] for x in behind if x["load"]]),
        "empty_url_s": median([x["url_s"] for x in empty]),
        "rebuild_url_s": median([x["url_s"] for x in rebuilds]),
        "rebuild_load_s": median([x["load"][2] for x in rebuilds if x["load"]]),
        "url_s": median([x["url_s"] for x in starts]),
        "first_request_s": median([x["first_request_s"] for x in starts]),
        "load_s": median([x["load"][2] for x in starts if x["load"]]),
        "runs": {"empty": empty, "rebuild": rebuilds, "checkpoint": starts, "behind": behind},
    }


# -- stored size ---------------------------------------------------------------------------


def bench_size(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    data = tmp / "size"
    with Server(data) as srv:
        conn = Conn(srv.port)
        conn.ok("POST", "/api/orchestrators", {"id": "size-check", "hostname": "h", "baseDir": "/srv"})
        conn.ok("POST", "/api/agents", {"id": "agent-size-check", "name": "a"})
        for _ in range(50):
            conn.ok("POST", "/api/orchestrators/size-check/heartbeat", {})
            conn.ok("POST", "/api/agents/agent-size-check/heartbeat", {})
        conn.close()
    orch = stored_sizes(data, "OrchestratorHeartbeatReceived")
    agent = stored_sizes(data, "AgentHeartbeatReceived")
    return {"orchestrator_max": max(orch), "agent_max": max(agent)}


# -- report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(res: dict[str, Any], a: argparse.Namespace, elapsed: float) -> None:
    out = print
    out(
        f"relay core benchmark: {machine()}, {a.runs} runs, medians; took {elapsed:.0f} s; "
        f"load average {res['load_before']} before, {load_average()} after"
    )
    if "ingest" in res:
        r = res["ingest"]
        client = (
            "wrk -t1 (C, own process)" if r["client"] == "wrk" else "aiohttp client (own process)"
        )
        out(
            f"ingest   {r['acked_per_s']:,.0f} acknowledged heartbeats/s over HTTP "
            f"({a.connections} keep-alive clients, {a.seconds:g} s, {a.fleet} orchestrators), "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms  [target >= 3,000: "
            f"{verdict(r['acked_per_s'] >= 3000)}]"
        )
        out(
            f"         library one heartbeat per save(): {r['baseline_per_s']:,.0f}/s; "
            f"relay/library {r['ratio']:.2f}x (median of same-run ratios)  "
            f"[target >= 1.0x: {verdict(r['ratio'] >= 1.0)}]"
        )
        out(
            f"         server CPU {r['server_cpu']:.0%} of a core ({r['cpu_us_per_ack']:.0f} µs per ack), "
            f"client {client} "
            f"CPU {r['client_cpu']:.0%}; errors {r['non2xx']}; every ack in the log: "
            f"{'yes' if r['log_check'] else 'NO'}"
        )
    if "list" in res:
        r = res["list"]
        out(
            f"list     GET /api/orchestrators, {a.fleet} x 5 managed agents ({r['bytes']:,} B): "
            f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms  [target p50 <= 5 ms: "
            f"{verdict(r['p50_ms'] <= 5)}]"
        )
    if "long" in res:
        r = res["long"]
        out(
            f"long     heartbeat p50 on {a.long:,}-event stream {r['long_p50_ms']:.2f} ms vs fresh "
            f"{r['fresh_p50_ms']:.2f} ms: {r['ratio']:.2f}x  [target <= 1.2x: {verdict(r['ratio'] <= 1.2)}]"
        )
        out(f"         first heartbeat after start (loads from snapshot): "
            f"{r['first_heartbeat_after_start_ms']:.1f} ms")
    if "startup" in res:
        r = res["startup"]
        out(
            f"startup  {r['events']:,}-event log with checkpoint: URL line after {r['url_s']:.2f} s, "
            f"first answer after {r['first_request_s']:.2f} s (read models loaded in {r['load_s']:.3f} s; "
            f"empty log: {r['empty_url_s']:.2f} s)  [target <= 2 s: {verdict(r['first_request_s'] <= 2)}]"
        )
        out(
            f"         checkpoint {r['tail']:,} events behind the log (worst case after kill -9): "
            f"first answer after {r['behind_first_request_s']:.2f} s (fold {r['behind_load_s']:.3f} s)"
        )
        out(
            f"         without a checkpoint (rebuild from 0): URL line after {r['rebuild_url_s']:.2f} s "
            f"(fold {r['rebuild_load_s']:.2f} s); log built in {r['build_s']:.0f} s"
        )
    if "size" in res:
        r = res["size"]
        out(
            f"size     stored heartbeat state+topic: orchestrator {r['orchestrator_max']} B, "
            f"agent {r['agent_max']} B  [target <= 120 B: "
            f"{verdict(max(r['orchestrator_max'], r['agent_max']) <= 120)}]"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (medians are quoted)")
    p.add_argument("--seconds", type=float, default=10.0, help="HTTP load duration per run")
    p.add_argument("--baseline-seconds", type=float, default=5.0, help="library baseline duration per run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--fleet", type=int, default=1000, help="orchestrators registered")
    p.add_argument("--client", choices=("wrk", "python"), default="wrk" if have_wrk() else "python")
    p.add_argument("--list-requests", type=int, default=200)
    p.add_argument("--long", type=int, default=100_000, help="earlier heartbeats on the long stream")
    p.add_argument("--long-requests", type=int, default=500)
    p.add_argument("--events", type=int, default=1_000_000, help="log length for the start-up test")
    p.add_argument("--tmp", type=Path, default=None, help="parent folder for the data (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the data folders")
    p.add_argument("--json", type=Path, default=None, help="also write every figure here")
    a = p.parse_args(argv)
    a.seconds = min(a.seconds, 120.0)
    a.baseline_seconds = min(a.baseline_seconds, 60.0)
    chosen = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-", dir=a.tmp))
    t0 = time.perf_counter()
    res: dict[str, Any] = {"load_before": load_average()}
    fns = {
        "ingest": bench_ingest, "list": bench_list, "long": bench_long,
        "startup": bench_startup, "size": bench_size,
    }
    try:
        for name in SECTIONS:
            if name in chosen:
                say(f"[{name}]")
                res[name] = fns[name](tmp, a)
    finally:
        if a.keep:
            say(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(res, a, time.perf_counter() - t0)
    if a.json:
        a.json.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
