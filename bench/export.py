"""`relay audit export` over an archived log, end to end (issue 14: >= 100,000 events/s). Not a test.

Builds a log with bench/verify_epochs.py's builder (registrations, then
heartbeats through the relay's mapper, sealed as the writer would), moves
every sealed epoch to the archive, then times ``relay audit export --output
FILE`` in a child process (interpreter start, imports, opening the log, every
line written), alternating a baseline relay and this one, ``--runs`` times
each, and prints the medians and their ratio. Both exports must be byte for
byte the same file, or the script fails.

The baseline is another relay's source tree: by default ``git archive`` of
``--base`` (a commit of this repository, main's code path) unpacked into a
temporary folder and put first on the child's ``PYTHONPATH``.

    .venv/bin/python bench/export.py                                   # 500,000 events, epochs of 100,000
    .venv/bin/python bench/export.py --events 1000000 --base 1062971
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from verify_epochs import archive_all, build

REPO = Path(__file__).resolve().parent.parent


def baseline_tree(commit: str, into: Path) -> Path:
    """``commit``'s relay package, unpacked (read-only use of this repository's history)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "relay"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    found = subprocess.run(
        [sys.executable, "-c", "import relay; print(relay.__file__)"],
        check=True, capture_output=True, text=True, cwd=into, env=dict(os.environ, PYTHONPATH=str(into)),
    ).stdout.strip()
    if not found.startswith(str(into)):
        raise SystemExit(f"the baseline child imports relay from {found}, not {into}")
    return into


def export(data: Path, out: Path, pythonpath: Path) -> tuple[float, str]:
    """Seconds for one ``relay audit export`` in a child process, and the output's sha256."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), "export", "--output", str(out)],
        check=True,
        env=env,
        cwd=pythonpath,
    )
    seconds = time.perf_counter() - t0
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return seconds, digest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=500_000)
    p.add_argument("--epoch", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--base", default="1062971", help="the baseline commit (main's code path)")
    a = p.parse_args()
    print(f"# {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; baseline {a.base}, this tree {REPO}")
    with tempfile.TemporaryDirectory(prefix="relay-export-") as tmp:
        root = Path(tmp)
        data = root / "data"
        built = build(data, a.events, a.epoch)
        archive_all(data)
        archived = sum(f.stat().st_size for f in (data / "archive").rglob("*") if f.is_file())
        print(f"built {a.events:,} events in epochs of {a.epoch:,} in {built:.1f} s; "
              f"archive {archived / 1e6:.1f} MB")
        (root / "base").mkdir()
        base = baseline_tree(a.base, root / "base")
        trees = {"baseline": base, "this": REPO}
        times: dict[str, list[float]] = {name: [] for name in trees}
        digests: set[str] = set()
        for _ in range(a.runs):
            for name, tree in trees.items():
                seconds, digest = export(data, root / "out.jsonl", tree)
                times[name].append(seconds)
                digests.add(digest)
        if len(digests) != 1:
            raise SystemExit(f"the exports differ: {sorted(digests)}")
        # Every event after the head at build time is one line: count them once more.
        lines = subprocess.run(
            [sys.executable, "-m", "relay", "audit", "--data", str(data), "export"],
            check=True, capture_output=True, cwd=REPO,
        ).stdout.count(b"\n")
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(f"{name:8s}: {lines:,} lines, runs {', '.join(f'{s:.2f}' for s in t)} s; median "
                  f"{medians[name]:.2f} s = {lines / medians[name]:,.0f} events/s")
        print(f"ratio: {medians['baseline'] / medians['this']:.2f}x faster; outputs identical "
              f"(sha256 {digests.pop()[:16]}...)")


if __name__ == "__main__":
    main()
