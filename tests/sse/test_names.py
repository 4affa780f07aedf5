"""SSE names are chosen in one place (relay.http.sse.names), for every change the read models report.

The read models say what changed (``Changed``); the stream names it. These
fail when a new kind of change has no wire name (a frame that could never be
encoded), when two kinds share one, when ``?types=`` and the names disagree,
or when a name is missing from the OpenAPI description of ``/api/events``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from relay.audit.log import SqliteLog, iterate
from relay.http import openapi
from relay.http.sse import FAMILIES, NAMES, Filter, encode
from relay.projections.fold import Changed
from relay.projections.readmodels import ReadModels
from relay.store import SQLITE_FILE

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_every_change_has_one_name_of_its_own() -> None:
    assert set(NAMES) == set(Changed)
    assert sorted(Changed) == list(range(len(Changed)))  # the encoder indexes a tuple by kind
    names = [n.name for n in NAMES.values()]
    assert len(set(names)) == len(names)
    for n in NAMES.values():
        family, dot, what = n.name.partition(".")
        assert dot and what and family == n.family
        assert n.head == b"\nevent: " + n.name.encode() + b"\ndata: "


def test_types_filter_takes_exactly_the_families_of_the_names() -> None:
    assert {n.family for n in NAMES.values()} == FAMILIES
    assert {"agent", "orchestrator", "message", "system"} == FAMILIES


def test_every_name_is_in_the_documented_stream() -> None:
    text = str(openapi.PATHS["/api/events"]["get"])
    for n in NAMES.values():
        assert n.name in text or f"{n.family}.*" in text, n.name


def test_the_recorded_log_folds_into_nameable_changes_only(tmp_path: Path) -> None:
    """Every event kind of the newest recorded log: the folds emit ``Changed`` kinds only,
    and each is encoded under its name and found by the filters its name implies."""
    newest = max(FIXTURES.glob("log-v*"), key=lambda p: int(p.name[5:]))
    shutil.copyfile(newest / SQLITE_FILE, tmp_path / SQLITE_FILE)  # never touch the committed log
    log = SqliteLog(tmp_path)
    rm = ReadModels()
    seen: set[Changed] = set()
    for n in iterate(log):
        changes = rm.apply(n.id, log.decode(n), emit=True)
        for (kind, data), frame in zip(changes, encode(n.id, changes), strict=True):
            assert isinstance(kind, Changed)
            seen.add(kind)
            naming = NAMES[kind]
            assert frame.family == naming.family
            assert b"\nevent: " + naming.name.encode() + b"\n" in frame.data
            assert orjson.loads(frame.data.split(b"data: ", 1)[1]) == orjson.loads(orjson.dumps(data))
            assert Filter(frozenset({naming.family})).accepts(frame)
            if frame.orchestrator is not None:
                assert Filter(orchestrator=frame.orchestrator).accepts(frame)
            for agent in frame.agents:
                assert Filter(agent=agent).accepts(frame)
    # The recording covers the common kinds; a fold that stopped reporting them fails here.
    assert {Changed.AGENT, Changed.ORCHESTRATOR, Changed.COMMAND, Changed.MESSAGE_NEW} <= seen
