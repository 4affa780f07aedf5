"""The read models as of any past position: fold the log, with anchors to start from.

A past state is the fold of the log up to that position (the same
``ReadModels.apply`` the live relay runs, so past and live cannot disagree).
Folding from position 0 each time would cost the whole log per question, so
the replayer keeps *anchors*: the serialised read models at positions it has
passed (every ``every`` events of any fold, and what the live relay hands it).
A question then costs at most the distance to the nearest anchor before it.

Anchors are bounded by count and bytes; past the bound, the anchor whose
neighbours are closest together goes first, so spacing widens with age
instead of the oldest history becoming a full rebuild. Folds run one at a
time (callers are on worker threads): a burst of past-state questions queues
instead of flooding the store and the CPU.
"""

from __future__ import annotations

import bisect
import threading
from pathlib import Path
from typing import Any

import orjson

from relay.audit.log import READ_CHUNK, LogReader
from relay.projections.follower import write_checkpoint
from relay.projections.readmodels import ReadModels

DEFAULT_EVERY = 10_000
DEFAULT_BUDGET = 64 * 1024 * 1024
DEFAULT_MAX_ANCHORS = 256


class Replayer:
    """Answers "the read models as of position P" from a log and a set of anchors."""

    def __init__(
        self,
        log: LogReader,
        every: int = DEFAULT_EVERY,
        budget_bytes: int = DEFAULT_BUDGET,
        max_anchors: int = DEFAULT_MAX_ANCHORS,
    ) -> None:
        self.log = log
        self.every = every
        self.budget_bytes = budget_bytes
        self.max_anchors = max_anchors
        self._positions: list[int] = []
        self._blobs: list[bytes] = []
        self._bytes = 0
        self._anchors_lock = threading.Lock()
        self._fold_lock = threading.Lock()
        self.folded = 0  # events folded in total (for tests and health)

    # -- anchors --------------------------------------------------------------

    def add_anchor(self, position: int, blob: bytes) -> None:
        """Keep ``blob`` (``orjson.dumps(rm.to_state())``) as the state at ``position``."""
        if position <= 0:
            return
        with self._anchors_lock:
            i = bisect.bisect_left(self._positions, position)
            if i < len(self._positions) and self._positions[i] == position:
                return
            self._positions.insert(i, position)
            self._blobs.insert(i, blob)
            self._bytes += len(blob)
            self._thin()

    def _thin(self) -> None:
        while len(self._positions) > 1 and (
            len(self._positions) > self.max_anchors or self._bytes > self.budget_bytes
        ):
            ps = self._positions
            # Drop the interior anchor whose removal leaves the smallest gap; of two,
            # the newest stays: it is the cheapest start for recent questions.
            victim = (
                0
                if len(ps) <= 2
                else min(range(1, len(ps) - 1), key=lambda k: ps[k + 1] - ps[k - 1])
            )
            self._bytes -= len(self._blobs[victim])
            del ps[victim]
            del self._blobs[victim]

    def anchors(self) -> list[int]:
        """The positions anchored now (oldest first)."""
        with self._anchors_lock:
            return list(self._positions)

    def _nearest(self, position: int) -> tuple[int, bytes | None]:
        with self._anchors_lock:
            i = bisect.bisect_right(self._positions, position)
            if i == 0:
                return 0, None
            return self._positions[i - 1], self._blobs[i - 1]

    # -- questions ------------------------------------------------------------

    def state_at(self, position: int) -> ReadModels:
        """A fresh ReadModels as of ``position`` (the caller owns it). Blocking: run off the loop."""
        with self._fold_lock:
            _, blob = self._nearest(position)
            rm = ReadModels.from_state(orjson.loads(blob)) if blob is not None else ReadModels()
            self.fold(rm, position, keep_anchors=True)
            return rm

    def fold(self, rm: ReadModels, until: int, keep_anchors: bool = False) -> int:
        """Apply every event after ``rm.position`` up to ``until``; returns how many."""
        count = 0
        decode = self.log.decode
        every = self.every
        next_anchor = (rm.position // every + 1) * every if keep_anchors else 2**63
        while rm.position < until:
            batch = self.log.select(rm.position, READ_CHUNK, until)
            if not batch:
                break
            for n in batch:
                rm.apply(n.id, decode(n))
                if n.id >= next_anchor:
                    self.add_anchor(n.id, orjson.dumps(rm.to_state()))
                    next_anchor = (n.id // every + 1) * every
            count += len(batch)
            if len(batch) < READ_CHUNK:
                break
        self.folded += count
        return count


def snapshot(rm: ReadModels) -> dict[str, Any]:
    """What ``relay audit state`` prints: the read models as the API lists them."""
    commands = [
        cmd
        for o in rm.orchestrators_sorted()
        for cmd in rm.commands_of(o["id"])
    ]
    return {
        "position": rm.position,
        "orchestrators": rm.orchestrators_sorted(),
        "agents": rm.agents_sorted(),
        "managedAgents": rm.managed_agents(),
        "commands": commands,
        "messages": rm.messages.all(),
    }


# -- anchors on disk ----------------------------------------------------------------
#
# A relay keeps its newest few anchors in the data folder too, so that a client
# resuming from just before a restart is replayed from a nearby anchor instead
# of from position 0. They are a cache: each names the event at its position
# (like the read-model checkpoint) and is ignored unless the log still has that
# event there; ``verify`` never uses them.

ANCHOR_DIR = "anchors"
KEEP_ON_DISK = 4


def save_anchor(data_dir: Path, position: int, blob: bytes, identity: list[Any]) -> None:
    """Write one anchor (atomically) and drop the oldest beyond ``KEEP_ON_DISK``."""
    folder = data_dir / ANCHOR_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    body = blob[:-1] + b',"anchor":' + orjson.dumps(identity) + b"}"
    write_checkpoint(folder / f"anchor-{position:015d}.json", body)
    for old in sorted(folder.glob("anchor-*.json"))[:-KEEP_ON_DISK]:
        old.unlink(missing_ok=True)


def load_anchors(data_dir: Path, log: LogReader, upto: int) -> list[tuple[int, bytes]]:
    """The anchors on disk at or before ``upto`` that still fit the log."""
    out: list[tuple[int, bytes]] = []
    for path in sorted((data_dir / ANCHOR_DIR).glob("anchor-*.json")):
        try:
            state = orjson.loads(path.read_bytes())
            identity = state.pop("anchor")
            position = int(state["position"])
            ReadModels.from_state(orjson.loads(orjson.dumps(state)))  # readable by this version
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if position > upto:
            continue
        found = log.select(position - 1, 1)
        if not found or found[0].id != position:
            continue
        n = found[0]
        if [n.originator_id.hex, n.originator_version] != identity:
            continue
        out.append((position, orjson.dumps(state)))
    return out
