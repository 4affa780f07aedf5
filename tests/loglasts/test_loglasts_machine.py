"""A stateful machine: writes, epoch closes, archiving, thinning, restarts and reads, interleaved.

The relay side is real (a RelayApp on a real SQLite file, the writer's epoch
sealer, the archiver, the read-through reader); the model is the plainest
possible twin: every recording the store ever acknowledged, in order. After
every step, reading the whole log through the archive must give the model,
less the heartbeats of thinned epochs, and those epochs' intervals must count
exactly the heartbeats that were dropped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from relay import commands as c
from relay.application import RelayApp
from relay.audit.epochs import EpochSealer, sealed_epochs
from relay.audit.log import AppLog
from relay.clock import FakeClock
from relay.config import Settings
from relay.store import store_env
from relay.store.archive import open_archive
from relay.store.archiver import THINNED_TOPICS, Archiver
from relay.store.reader import LogReader
from tests.loglasts.archivelog import rows

AGENTS = ("a0", "a1", "a2")
EPOCH = 12


class LogLasts(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="loglasts-"))
        self.clock = FakeClock()
        self.model: list[tuple[Any, ...]] = []
        self.keep: int | None = None
        self._open()
        for aid in AGENTS:
            self._do(c.RegisterAgent(agent_id=aid, name=aid, label=None, tags=[], machine=None,
                                     capabilities=[], meta={}, at=self.clock.advance(1)))

    def _open(self) -> None:
        self.app = RelayApp(store_env(Settings(data_dir=self.dir)))
        self.archive = open_archive(self.app, self.dir)
        self.reader = LogReader(AppLog(self.app), self.archive)
        self.sealer = EpochSealer.load(self.app, EPOCH, 3_600, self.clock)

    def _record(self, recordings: list[Any]) -> None:
        for r in recordings:
            n = r.notification
            self.model.append((n.id, n.originator_id, n.originator_version, n.topic, bytes(n.state)))

    def _do(self, cmd: Any) -> None:
        try:
            _, aggs = self.app.execute(cmd)
        except Exception as e:  # a refusal (removed agent): nothing recorded
            if type(e).__name__ not in ("NotFoundError", "ConflictError"):
                raise
            return
        recordings = self.app.save(*aggs)
        self._record(recordings)
        self.sealer.committed(recordings)
        self._record(self.sealer.seal(self.app))

    @rule(beats=st.lists(st.sampled_from(AGENTS), min_size=1, max_size=15))
    def heartbeats(self, beats: list[str]) -> None:
        for aid in beats:
            self._do(c.HeartbeatAgent(agent_id=aid, at=self.clock.advance(7)))

    @rule(aid=st.sampled_from(AGENTS))
    def remove_and_return(self, aid: str) -> None:
        self._do(c.RemoveAgent(agent_id=aid, at=self.clock.advance(3)))
        self._do(c.RegisterAgent(agent_id=aid, name=aid, label="back", tags=[], machine=None,
                                 capabilities=[], meta={}, at=self.clock.advance(3)))

    @rule(keep=st.sampled_from([None, 0, 60_000]))
    def archive_and_thin(self, keep: int | None) -> None:
        note(f"archive, keep heartbeats {keep}")
        Archiver(self.app, self.archive, keep_heartbeats_ms=keep).run(
            sealed_epochs(self.app.recorder), now=self.clock.now_ms()
        )

    @rule(ms=st.sampled_from([1_000, 120_000]))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def restart(self) -> None:
        self.app.close()
        self._open()

    @invariant()
    def every_reader_sees_the_twin_less_thinned_heartbeats(self) -> None:
        self.archive.refresh()
        thin = [(e.first, e.last) for e in self.archive.entries() if e.kind == "thin"]

        def thinned(r: tuple[Any, ...]) -> bool:
            return r[3] in THINNED_TOPICS and any(a <= r[0] <= b for a, b in thin)

        want = [r for r in self.model if not thinned(r)]
        assert rows(self.reader, 0, 7) == want
        dropped = sum(1 for r in self.model if thinned(r))
        assert sum(iv.count for iv in self.reader.intervals(0, 2**62, seals=True)) == dropped
        covered = self.reader.covered_upto()
        live = self.app.recorder.select_notifications(start=0, limit=1)
        assert not live or live[0].id > covered

    def teardown(self) -> None:
        self.app.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LogLasts.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestLogLasts = LogLasts.TestCase
