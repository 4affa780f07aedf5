"""Two writers sealing one log (two relay nodes): seals never overlap, so verify passes."""

from __future__ import annotations

from pathlib import Path

from relay.application import RelayApp
from relay.audit.log import SqliteLog
from relay.audit.sealer import Sealer
from relay.audit.verify import verify
from relay.clock import FakeClock
from relay.config import Settings
from relay.store import store_env
from tests.loglasts.epochlog import beats, run_relay


def test_a_sealer_behind_another_nodes_seal_takes_it_as_its_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_relay(data, [beats(40)], seal_every=0, epoch_events=0, archive=False)
    env = store_env(Settings(data_dir=data))
    a, b = RelayApp(env), RelayApp(env)
    clock = FakeClock()
    sa, sb = Sealer.load(a, 10, clock), Sealer.load(b, 10, clock)  # both see an unsealed log
    assert sa.seal(a)  # node A seals first
    # Node B, still at position 0, must not record a seal from 1 that overlaps A's.
    assert sb.seal(b) == []
    assert sb.upto == sa.upto
    run_relay(data, [beats(30)], seal_every=10, epoch_events=0, archive=False)
    with SqliteLog(data) as log:
        report = verify(log, data, gapless=True)
    assert report.ok, report.problems
    assert report.seals >= 2
