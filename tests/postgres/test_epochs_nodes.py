"""Epochs on a PostgreSQL log shared by two relay nodes: one boundary, one seal per epoch, verify passes."""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from relay.audit.cli import open_log
from relay.audit.epochs import sealed_epochs
from tests.http.helpers import register_agent
from tests.postgres.conftest import Connect, NodeFactory

pytestmark = pytest.mark.postgres

EPOCH = 40


def test_two_nodes_agree_on_every_epoch_and_each_is_sealed_once(
    node: NodeFactory,
    connect: Connect,
    log_dsn: str,
    tmp_path: Path,
) -> None:
    args = ["--epoch-events", str(EPOCH), "--seal-every", "16"]
    a, b = node("a", args), node("b", args)
    ca, cb = connect(a.url), connect(b.url)
    register_agent(ca, "x")
    register_agent(cb, "y")

    def beat(url: str, aid: str, n: int) -> None:
        c = connect(url)
        for _ in range(n):
            assert c.post(f"/api/agents/{aid}/heartbeat").status == 200

    # Both nodes write at once, so both race to seal the same epochs.
    ts = [threading.Thread(target=beat, args=(u, aid, 120)) for u, aid in ((a.url, "x"), (b.url, "y"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    # Through the read-through log: closed epochs may already be archived (a table on PostgreSQL).
    log, _ = open_log(argparse.Namespace(data=tmp_path / "audit", store="postgres", postgres_dsn=log_dsn))
    seals = sealed_epochs(log)
    assert len(seals) >= 4
    assert [s.epoch for s in seals] == list(range(1, len(seals) + 1))  # each epoch exactly once
    for before, after in itertools.pairwise(seals):
        assert after.first == before.last + 1 and after.previous_root == before.root
    with psycopg.connect(log_dsn) as conn:
        recorded = conn.execute("SELECT count(*) FROM relay_events WHERE topic = 'EpochSealed'").fetchone()
    assert recorded is not None and recorded[0] <= len(seals)  # no second seal of any epoch, live or archived

    # verify from either node's side reads the same log and recomputes every root.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "audit",
            "--store",
            "postgres",
            "--postgres-dsn",
            log_dsn,
            "--data",
            str(tmp_path / "audit"),
            "verify",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"epochs: {len(seals)} sealed; {len(seals)} recomputed from their events" in out.stdout
