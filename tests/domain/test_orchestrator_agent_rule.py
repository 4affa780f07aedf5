""""An orchestrator is also an agent": one rule, read in one place (issue 13).

``orchestrator_agent_id`` names an orchestrator's own agent record and
``orchestrator_of_agent_id`` reads such an id back; the application decides
what a heartbeat or a removal on that id means. Before, seven modules sliced
the prefix off by hand; the scan below fails if one does again.
"""

from __future__ import annotations

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import commands as c
from relay.application import RelayApp
from relay.domain.errors import ConflictError, InvalidInputError, NotFoundError
from relay.domain.orchestrator import Orchestrator
from relay.domain.rules import (
    MAX_ORCHESTRATOR_ID_CHARS,
    check_agent_id,
    check_orchestrator_id,
    deadline_at,
    orchestrator_agent_id,
    orchestrator_of_agent_id,
)
from tests.support.sourcescan import ROOT, offending_lines

# The rule's home, and the wire declarations that put the reserved prefix into the schema.
PREFIX_READERS = {"relay/domain/rules.py", "relay/wire/shapes.py"}

ids = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="/"),
    min_size=1,
    max_size=MAX_ORCHESTRATOR_ID_CHARS,
)


@given(ids)
def test_an_orchestrators_agent_id_reads_back_to_it(oid: str) -> None:
    check_orchestrator_id("id", oid)
    agent_id = orchestrator_agent_id(oid)
    assert orchestrator_of_agent_id(agent_id) == oid
    with pytest.raises(InvalidInputError):
        check_agent_id("id", agent_id)  # reserved: no agent registers under it


@given(ids)
def test_an_id_an_agent_may_take_is_no_orchestrators(aid: str) -> None:
    try:
        check_agent_id("id", aid)
    except InvalidInputError:
        return
    assert orchestrator_of_agent_id(aid) is None


@given(st.none() | st.integers(1, 10**6), st.floats(1, 10**6), st.integers(0, 2**50))
def test_a_deadline_is_never_later_than_the_relays(asked: int | None, most: float, at: int) -> None:
    due = deadline_at(asked, most, at)
    assert at < due <= at + int(most * 1000)
    if asked is not None and asked <= most:
        assert due == at + asked * 1000


def _prefix_users(source: str) -> list[int]:
    tree = ast.parse(source)
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Name) and node.id == "ORCHESTRATOR_AGENT_PREFIX")
        or (isinstance(node, ast.alias) and node.name == "ORCHESTRATOR_AGENT_PREFIX")
        or (isinstance(node, ast.Constant) and node.value == "orchestrator-")
    )


def test_only_the_rules_read_the_prefix() -> None:
    found = offending_lines(ROOT / "relay", PREFIX_READERS, _prefix_users)
    assert found == {}, f"use orchestrator_of_agent_id / orchestrator_agent_id; found {found}"


def test_the_scan_sees_a_prefix_sliced_by_hand() -> None:
    bad = (
        "from relay.domain.rules import ORCHESTRATOR_AGENT_PREFIX\n"
        "def f(a):\n    return a[len(ORCHESTRATOR_AGENT_PREFIX):]\n"
    )
    assert _prefix_users(bad) == [1, 3]
    assert _prefix_users("x = 'orchestrator-' + oid\n") == [1]


# -- the application decides what the orchestrator's own agent id means -----------------


@pytest.fixture
def app() -> RelayApp:
    app = RelayApp()
    reg = c.RegisterOrchestrator.of("o1", "h1", "/base", ["claude"], [], {}, "hash", at=1_000)
    _, touched = app.execute(reg)
    app.save(*touched)
    return app


def test_a_heartbeat_on_its_agent_id_beats_for_the_orchestrator(app: RelayApp) -> None:
    _, touched = app.execute(c.HeartbeatAgent("orchestrator-o1", 5_000))
    assert [type(t) for t in touched] == [Orchestrator]
    assert touched[0].orchestrator_id == "o1" and touched[0].last_seen == 5_000


def test_its_agent_record_goes_only_with_the_orchestrator(app: RelayApp) -> None:
    with pytest.raises(ConflictError, match="remove the orchestrator instead"):
        app.execute(c.RemoveAgent("orchestrator-o1", 5_000))


def test_an_unknown_orchestrators_agent_id_is_no_agent(app: RelayApp) -> None:
    for cmd in (c.HeartbeatAgent("orchestrator-zz", 5_000), c.RemoveAgent("orchestrator-zz", 5_000)):
        with pytest.raises(NotFoundError, match="no agent 'orchestrator-zz'"):
            app.execute(cmd)
