"""SSE encoding before and after the naming moved out of the read models (issue 13). Not a test.

Run from the repository root (a few seconds)::

    .venv/bin/python bench/sse_encode.py                 # against main at eb3499c
    .venv/bin/python bench/sse_encode.py --rev HEAD~3 --rounds 15

The read models used to hand the stream ``("agent.status", record)`` and the
encoder split the name per frame; they now hand ``(Changed.AGENT, record)``
and ``relay.http.sse.names`` holds each kind's name, family, scope and
pre-joined header. Both encoders run here, in this process, on the same
changes: every change the newest recorded log (tests/fixtures) produces when
folded with ``emit=True``, many times over. The baseline is the encoder of
``--rev`` (``git show REV:relay/http/sse.py``, loaded as a module), given the
same changes under their wire names. Figures: the median over ``--rounds``
of the time per frame, encode alone and encode + one filtered selection (an
``?agent=`` subscriber), and the ratio new/old (below 1: faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import REPO, load_average, machine, median

from relay.audit.log import SqliteLog, iterate
from relay.http.sse import NAMES, Filter, encode
from relay.projections.readmodels import ReadModels
from relay.store import SQLITE_FILE


def old_module(rev: str) -> Any:
    """The single-file relay/http/sse.py of ``rev``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:relay/http/sse.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="sse-old-"))
    path = folder / "sse_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sse_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shutil.rmtree(folder)
    return module


def recorded_changes() -> list[tuple[int, list[Any]]]:
    """(position, changes) for every position of the newest recorded log that has changes."""
    fixtures = REPO / "tests" / "fixtures"
    newest = max(fixtures.glob("log-v*"), key=lambda p: int(p.name[5:]))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(newest / SQLITE_FILE, Path(tmp) / SQLITE_FILE)
        log = SqliteLog(Path(tmp))
        rm = ReadModels()
        out = []
        for n in iterate(log):
            changes = rm.apply(n.id, log.decode(n), emit=True)
            if changes:
                # Copies: the records are the live read models and change as the fold goes on.
                out.append((n.id, [(k, dict(d)) for k, d in changes]))
    return out


def per_frame_ns(
    run: Any, batches: list[tuple[int, list[Any]]], repeat: int, flt: Any
) -> tuple[float, float]:
    """(ns per frame encoding, ns per frame encoding + one filtered selection)."""
    frames = sum(len(c) for _, c in batches) * repeat
    t0 = time.perf_counter_ns()
    for _ in range(repeat):
        for position, changes in batches:
            run(position, changes)
    t1 = time.perf_counter_ns()
    for _ in range(repeat):
        for position, changes in batches:
            flt.select(run(position, changes))
    t2 = time.perf_counter_ns()
    return (t1 - t0) / frames, (t2 - t1) / frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default="eb3499c", help="the baseline's revision (single-file sse.py)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--repeat", type=int, default=200, help="passes over the recorded changes per round")
    args = p.parse_args()

    old = old_module(args.rev)
    new_batches = recorded_changes()
    old_batches = [(pos, [(NAMES[k].name, d) for k, d in ch]) for pos, ch in new_batches]
    agent = next(d["id"] for _, ch in old_batches for name, d in ch if name == "agent.status")
    new_flt, old_flt = Filter(agent=agent), old.Filter(agent=agent)
    # Same bytes first: a faster encoder that says something else is no result.
    for (pos, ch), (_, och) in zip(new_batches, old_batches, strict=True):
        assert [f.data for f in encode(pos, ch)] == [f.data for f in old.encode(pos, och)], pos

    results: dict[str, list[float]] = {"old": [], "new": [], "old+select": [], "new+select": []}
    for _ in range(args.rounds):  # alternate, so drift in the machine's load hits both alike
        e, s = per_frame_ns(old.encode, old_batches, args.repeat, old_flt)
        results["old"].append(e)
        results["old+select"].append(s)
        e, s = per_frame_ns(encode, new_batches, args.repeat, new_flt)
        results["new"].append(e)
        results["new+select"].append(s)

    frames = sum(len(c) for _, c in new_batches)
    print(f"# {machine()}; load average {load_average()}")
    print(f"# {len(new_batches)} positions, {frames} frames from the recorded log, x{args.repeat} per round, "
          f"{args.rounds} rounds; baseline {args.rev}")
    for what in ("", "+select"):
        o, n = median(results["old" + what]), median(results["new" + what])
        label = "encode" + (" + ?agent= select" if what else "")
        print(f"{label:28} old {o:8.0f} ns/frame   new {n:8.0f} ns/frame   new/old {n / o:.3f}")


if __name__ == "__main__":
    main()
