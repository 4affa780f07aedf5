"""PostgreSQL benchmark (issue 8): heartbeat ingest and append->SSE latency, SQLite vs one and two nodes.

Not a test: it prints figures (and ``--json`` writes them). Run from the repository root::

    .venv/bin/python bench/postgres.py --dsn postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/postgres.py --dsn ... --runs 3 --seconds 10 --only ingest

Every configuration runs in the same invocation on the same machine, one after
the other, each run on a fresh log (a new SQLite folder, or a new PostgreSQL
schema dropped afterwards):

ingest   acknowledged heartbeats/s over HTTP (wrk, 64 keep-alive connections in
         all) against: SQLite, one node; PostgreSQL, one node; PostgreSQL, two
         nodes on one log, each taking half the connections and its own half of
         the fleet (as behind a load balancer that keeps a host on one node).
         Every acknowledged heartbeat is checked to be in the log.
latency  append->SSE: one client POSTs a heartbeat, a subscriber measures when
         the event arrives on its stream; one at a time, so each sample is
         unambiguous. SQLite (same node); PostgreSQL same node; PostgreSQL with
         the write on node A and the stream on node B (the LISTEN/NOTIFY path).

Figures are medians of ``--runs`` runs; ratios to SQLite are taken within a
run, then their median quoted. The 2-core machine runs PostgreSQL, the relays
and wrk together, so "two nodes" measures contention for the same two cores,
not what two machines would give.
"""

from __future__ import annotations

import argparse
import http.client
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import psycopg
from harness import Server, cpu_seconds, load_average, machine, median, pct, register_orchestrators
from loadgen import have_wrk, heartbeat_load
from psycopg import sql


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def fresh_schema(dsn: str) -> Iterator[tuple[str, str]]:
    """A new empty schema and the DSN narrowed to it; dropped afterwards."""
    schema = "relay_bench_" + secrets.token_hex(4)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in dsn else "?"
    try:
        yield schema, f"{dsn}{sep}options={quote('-csearch_path=' + schema)}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def pg_count(dsn: str, schema: str, topic: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.relay_events WHERE topic = %s").format(sql.Identifier(schema)),
            (topic,),
        ).fetchone()
    return int(row[0]) if row else 0


def sqlite_count(data: Path, topic: str) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{data / 'relay.sqlite'}?mode=ro", uri=True) as con:
        (n,) = con.execute("SELECT COUNT(*) FROM stored_events WHERE topic = ?", (topic,)).fetchone()
    return int(n)


def settled(count: Any, quiet: float = 0.5, limit: float = 15.0) -> int:
    """``count()`` once it has stopped moving for ``quiet`` seconds (in-flight writes landed)."""
    deadline = time.monotonic() + limit
    value, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return int(value)


def pg_args(dsn: str) -> list[str]:
    return ["--store", "postgres", "--postgres-dsn", dsn]


# -- ingest ---------------------------------------------------------------------------------


def load_nodes(servers: list[Server], prefixes: list[str], a: argparse.Namespace) -> dict[str, Any]:
    """Run wrk against each server at once (connections split evenly); combined figures."""
    per = max(1, a.connections // len(servers))
    results: list[dict[str, Any]] = [{} for _ in servers]
    cpu0 = [cpu_seconds(s.pid) for s in servers]

    def run(k: int) -> None:
        results[k] = heartbeat_load(servers[k].url, a.fleet, prefixes[k], per, a.seconds, a.client)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = sum(cpu_seconds(s.pid) - c for s, c in zip(servers, cpu0, strict=True))
    seconds = max(r["seconds"] for r in results)
    ok = sum(r["ok"] for r in results)
    return {
        "ok": ok,
        "acked_per_s": ok / seconds,
        "p50_ms": median([r["p50_ms"] for r in results]),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["non2xx"] + r["socket_errors"] for r in results),
        "server_cpu": cpu / seconds,
    }


def ingest_sqlite(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    data = tmp / f"sqlite-{secrets.token_hex(3)}"
    with Server(data) as srv:
        register_orchestrators(srv.port, a.fleet, prefix="a")
        heartbeat_load(srv.url, a.fleet, "a", a.connections, 1, a.client)  # warm-up
        def count() -> int:
            return sqlite_count(data, "OrchestratorHeartbeatReceived")

        before = settled(count)
        out = load_nodes([srv], ["a"], a)
        out["in_log"] = settled(count) - before
    return out


def ingest_pg(tmp: Path, a: argparse.Namespace, nodes: int) -> dict[str, Any]:
    prefixes = ["a", "b"][:nodes]
    with fresh_schema(a.dsn) as (schema, dsn):
        servers = [
            Server(tmp / f"pg-{p}-{secrets.token_hex(3)}", extra=pg_args(dsn)).start() for p in prefixes
        ]

        def count() -> int:
            return pg_count(a.dsn, schema, "OrchestratorHeartbeatReceived")

        try:
            for srv, p in zip(servers, prefixes, strict=True):
                register_orchestrators(srv.port, a.fleet, prefix=p)
            for srv, p in zip(servers, prefixes, strict=True):
                heartbeat_load(srv.url, a.fleet, p, a.connections // nodes, 1, a.client)  # warm-up
            before = settled(count)
            out = load_nodes(servers, prefixes, a)
            out["in_log"] = settled(count) - before
        finally:
            for srv in servers:
                srv.stop()
    return out


def bench_ingest(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for r in range(a.runs):
        run = {"sqlite": ingest_sqlite(tmp, a), "pg1": ingest_pg(tmp, a, 1), "pg2": ingest_pg(tmp, a, 2)}
        for name, x in run.items():
            x["log_check"] = x["ok"] <= x["in_log"] <= x["ok"] + a.connections
            if not x["log_check"]:
                say(f"  log check: {x['ok']} acknowledged, {x['in_log']} in the log")
            say(f"  run {r + 1} {name}: {x['acked_per_s']:,.0f} acked/s, p50 {x['p50_ms']:.1f} ms, "
                f"p99 {x['p99_ms']:.1f} ms, errors {x['errors']}, server CPU {x['server_cpu']:.0%}, "
                f"log check {'ok' if x['log_check'] else 'FAILED'}")
        runs.append(run)
    out: dict[str, Any] = {"runs": runs}
    for name in ("sqlite", "pg1", "pg2"):
        keys = ("acked_per_s", "p50_ms", "p99_ms", "server_cpu")
        out[name] = {k: median([run[name][k] for run in runs]) for k in keys}
        out[name]["errors"] = sum(run[name]["errors"] for run in runs)
        out[name]["log_check"] = all(run[name]["log_check"] for run in runs)
        out[name]["ratio_to_sqlite"] = median(
            [run[name]["acked_per_s"] / run["sqlite"]["acked_per_s"] for run in runs]
        )
    return out


# -- append -> SSE latency -------------------------------------------------------------------


class Stream:
    """A raw SSE subscriber; ``next()`` blocks until the next event's blank line."""

    def __init__(self, port: int, query: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", f"/api/events?{query}", headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status

    def next(self) -> None:
        got_data = False
        while True:
            line = self.resp.readline()
            if not line:
                raise EOFError("stream ended")
            if line.startswith(b"data:"):
                got_data = True
            elif line in (b"\n", b"\r\n") and got_data:
                return

    def close(self) -> None:
        self.conn.close()


def _get_json(port: int, path: str) -> tuple[int, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, orjson.loads(body) if body else None
    finally:
        c.close()


def _position(port: int) -> int:
    _, health = _get_json(port, "/api/health")
    return int(next(ch["position"] for ch in health["checks"] if ch["name"] == "readModels"))


def latency_samples(write_port: int, stream_port: int, n: int) -> list[float]:
    """Seconds from sending a heartbeat on one node to its event on another's (or the same) stream.

    A fresh orchestrator per call, and the stream opened only once the
    stream's node has applied everything the writing node has: otherwise an
    older event still in flight would be counted as the answer to a new one.
    """
    prefix = "lat" + secrets.token_hex(3)
    oid = prefix + "0"
    register_orchestrators(write_port, 1, prefix=prefix)
    head = _position(write_port)
    deadline = time.monotonic() + 30
    while _position(stream_port) < head:
        if time.monotonic() > deadline:
            raise RuntimeError("the stream's node did not catch up")
        time.sleep(0.01)
    stream = Stream(stream_port, f"orchestrator={oid}&types=orchestrator")
    writer = http.client.HTTPConnection("127.0.0.1", write_port, timeout=30)
    out: list[float] = []
    try:
        for i in range(n + 20):
            t0 = time.perf_counter()
            writer.request("POST", f"/api/orchestrators/{oid}/heartbeat", body=b"{}",
                           headers={"Content-Type": "application/json"})
            stream.next()
            t1 = time.perf_counter()
            r = writer.getresponse()
            r.read()
            assert r.status == 200, r.status
            if i >= 20:  # the first few warm caches and connections
                out.append(t1 - t0)
            time.sleep(0.002)
    finally:
        stream.close()
        writer.close()
    return out


def bench_latency(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for r in range(a.runs):
        run: dict[str, list[float]] = {}
        with Server(tmp / f"lat-sqlite-{r}") as srv:
            run["sqlite"] = latency_samples(srv.port, srv.port, a.samples)
        with (
            fresh_schema(a.dsn) as (_, dsn),
            Server(tmp / f"lat-pg-a-{r}", extra=pg_args(dsn)) as node_a,
            Server(tmp / f"lat-pg-b-{r}", extra=pg_args(dsn)) as node_b,
        ):
            run["pg_same_node"] = latency_samples(node_a.port, node_a.port, a.samples)
            run["pg_other_node"] = latency_samples(node_a.port, node_b.port, a.samples)
        for name, xs in run.items():
            say(f"  run {r + 1} {name}: p50 {pct(xs, 50) * 1000:.2f} ms, p99 {pct(xs, 99) * 1000:.2f} ms")
        runs.append(run)
    return {
        name: {
            "p50_ms": median([pct(run[name], 50) * 1000 for run in runs]),
            "p99_ms": median([pct(run[name], 99) * 1000 for run in runs]),
            "samples": sum(len(run[name]) for run in runs),
        }
        for name in runs[0]
    }


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", required=True, help="a PostgreSQL DSN (schemas are created and dropped in it)")
    p.add_argument("--only", default="ingest,latency", help="sections: ingest,latency")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="load duration per ingest run")
    p.add_argument("--fleet", type=int, default=500, help="orchestrators per node's share")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--samples", type=int, default=300, help="latency samples per configuration and run")
    p.add_argument("--client", choices=("wrk", "python"), default="wrk" if have_wrk() else "python")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args()
    only = set(a.only.split(","))
    say(f"machine: {machine()}, load average {load_average()}, client {a.client}")
    out: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="relay-bench-pg-") as d:
        tmp = Path(d)
        if "ingest" in only:
            say("ingest")
            out["ingest"] = bench_ingest(tmp, a)
        if "latency" in only:
            say("append -> SSE latency")
            out["latency"] = bench_latency(tmp, a)
    out["load_average_after"] = load_average()
    if "ingest" in out:
        for name in ("sqlite", "pg1", "pg2"):
            x = out["ingest"][name]
            print(f"ingest {name}: {x['acked_per_s']:,.0f} acked/s ({x['ratio_to_sqlite']:.2f}x SQLite), "
                  f"p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms, server CPU {x['server_cpu']:.0%}, "
                  f"errors {x['errors']}, log check {'ok' if x['log_check'] else 'FAILED'}")
    if "latency" in out:
        for name, x in out["latency"].items():
            print(f"append->SSE {name}: p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms "
                  f"({x['samples']} samples)")
    if a.json:
        a.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
