"""Placement and the reaper's brake, as pure rules over random fleets.

Each property names the deliberate bug it catches (docs/invariants.md); the
mutations are run by hand by editing relay/domain/placement.py or outage.py.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.domain.outage import PassDecision, ReapBrake
from relay.domain.placement import HostView, NoPlacementError, check_room, eligible, place

PROVIDERS = ("claude", "codex")
LABEL_KEYS = ("zone", "gpu")
LABEL_VALUES = ("a", "b")

labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)


@st.composite
def hosts(draw: st.DrawFn) -> list[HostView]:
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        max_agents = draw(st.one_of(st.none(), st.integers(1, 4)))
        out.append(
            HostView(
                id=f"h{i}",
                hostname=draw(st.sampled_from(["alpha", "beta"])),  # ties are common
                online=draw(st.booleans()),
                providers=tuple(draw(st.sets(st.sampled_from(PROVIDERS)))),
                labels=draw(labels),
                max_agents=max_agents,
                active_agents=draw(st.integers(0, 5)),
            )
        )
    return out


@given(fleet=hosts(), provider=st.sampled_from(PROVIDERS), selector=labels)
def test_placement_is_eligible_least_loaded_and_refuses_only_when_nothing_fits(
    fleet: list[HostView], provider: str, selector: dict[str, str]
) -> None:
    """Never over capacity, never a non-matching or offline host, always the least loaded.

    Mutations caught: ``>`` for ``>=`` in ``HostView.full`` (a full host chosen);
    dropping the selector check; ``max`` for ``min`` (the most loaded chosen).
    """
    ok = eligible(fleet, provider, selector)
    try:
        chosen = place(fleet, provider, selector)
    except NoPlacementError as e:
        assert ok == [], f"refused ({e}) although {[h.id for h in ok]} fit"
        return
    assert chosen in ok
    assert chosen.online and provider in chosen.providers
    assert all(chosen.labels.get(k) == v for k, v in selector.items())
    assert chosen.max_agents is None or chosen.active_agents < chosen.max_agents
    assert chosen.active_agents == min(h.active_agents for h in ok)


@given(fleet=hosts(), provider=st.sampled_from(PROVIDERS), selector=labels, seed=st.integers(0, 2**32))
def test_placement_does_not_depend_on_the_order_of_hosts(
    fleet: list[HostView], provider: str, selector: dict[str, str], seed: int
) -> None:
    """Deterministic: the same fleet in any order gives the same host or the same refusal.

    Mutation caught: a sort key without the id (two hosts with one hostname and load).
    """
    shuffled = list(fleet)
    random.Random(seed).shuffle(shuffled)

    def outcome(hs: list[HostView]) -> str:
        try:
            return place(hs, provider, selector).id
        except NoPlacementError as e:
            return "refused: " + e.message

    assert outcome(fleet) == outcome(shuffled)


def test_refusals_name_the_first_reason() -> None:
    full = HostView("a", "a", True, ("claude",), {"zone": "x"}, 1, 1)
    offline = HostView("b", "b", False, ("codex",), {}, None, 0)
    with pytest.raises(NoPlacementError, match="no online host offers codex"):
        place([full, offline], "codex")
    with pytest.raises(NoPlacementError, match="matches selector zone=y"):
        place([full], "claude", {"zone": "y"})
    with pytest.raises(NoPlacementError, match="the 1 matching host is full"):
        place([full], "claude", {"zone": "x"})
    fulls = [HostView(f"h{i}", f"h{i}", True, ("claude",), {}, 2, 2) for i in range(3)]
    with pytest.raises(NoPlacementError, match="all 3 matching hosts are full"):
        place(fulls, "claude")
    with pytest.raises(NoPlacementError, match=r"'a' is full \(1 of 1 agents\)"):
        check_room(full)
    with pytest.raises(NoPlacementError, match="no online host offers claude"):
        place([offline], "claude")


def test_ties_go_to_the_hostname_first() -> None:
    b = HostView("1", "b-host", True, ("claude",), {}, None, 0)
    a = HostView("2", "a-host", True, ("claude",), {}, None, 0)
    busy = HostView("0", "0-host", True, ("claude",), {}, None, 3)
    assert place([b, busy, a], "claude") is a


# -- the reaper's brake ---------------------------------------------------------


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 200), st.booleans()), min_size=1, max_size=40
    ),
    fraction=st.sampled_from([0.3, 0.5, 0.55, 0.9]),
    minimum=st.integers(0, 20),
)
def test_the_brake_never_reaps_a_mass_outage_and_resumes_only_below_the_threshold(
    steps: list[tuple[int, int, bool]], fraction: float, minimum: int
) -> None:
    """No reap while over the threshold unless forced; a resume records itself and reaps none.

    Mutations caught: ``or`` for ``and`` in ``over`` (small fleets never reaped);
    RESUME that reaps in the same pass (no fresh grace); HOLD turned into REAP.
    """
    brake = ReapBrake(fraction, minimum)
    suspended = False
    for would, online_extra, force in steps:
        online = would + online_extra
        decision = brake.decide(suspended, would, online, force)
        over = would > minimum and would > fraction * online
        if force:
            assert decision is PassDecision.REAP
            continue
        if decision is PassDecision.REAP:
            assert not suspended and not over
        elif decision is PassDecision.SUSPEND:
            assert not suspended and over
            suspended = True
        elif decision is PassDecision.HOLD:
            assert suspended and over
        else:
            assert decision is PassDecision.RESUME and suspended and not over
            suspended = False


def test_the_brake_at_its_defaults() -> None:
    brake = ReapBrake()
    assert brake.over(11, 20)  # more than 10 and more than half
    assert not brake.over(10, 15)  # not more than 10
    assert not brake.over(11, 22)  # exactly half is not more than half
    assert brake.decide(False, 700, 1000) is PassDecision.SUSPEND
    assert brake.decide(True, 700, 1000) is PassDecision.HOLD
    assert brake.decide(True, 3, 1000) is PassDecision.RESUME
    assert brake.decide(True, 700, 1000, force=True) is PassDecision.REAP


def test_a_full_tie_goes_to_the_smaller_id_in_any_order() -> None:
    """Mutation caught: a sort key without the id (input order would decide)."""
    x = HostView("x", "same", True, ("claude",), {}, None, 1)
    y = HostView("y", "same", True, ("claude",), {}, None, 1)
    assert place([x, y], "claude") is x
    assert place([y, x], "claude") is x


# -- old snapshots still load -------------------------------------------------------


def test_an_orchestrator_snapshot_taken_before_issue_15_loads_with_defaults() -> None:
    """Snapshots carry the aggregate's class_version; a v1 one is upcast, never edited."""
    from eventsourcing.domain import Snapshot

    from relay.domain.orchestrator import Orchestrator

    o = Orchestrator("o", "host", "/srv", ["claude"], [], {}, "0" * 64, 5)
    o.reap(10**6, 5, 1, 0)
    snap = Snapshot.take(o)
    state = dict(snap.state)
    assert state.pop("class_version") == 3
    added = (
        "max_agents", "labels", "load", "deadlines", "pending_spawns", "offline_since",
        "agents_lost", "attention", "input_commands",  # the last two: issue 16 (v3)
    )
    for name in added:
        state.pop(name)
    old = Snapshot(
        originator_id=snap.originator_id,
        originator_version=snap.originator_version,
        timestamp=snap.timestamp,
        topic=snap.topic,
        state=state,
    )
    loaded = old.mutate(None)
    assert loaded.max_agents is None and loaded.labels == {} and loaded.deadlines == {}
    assert loaded.offline_since == 5  # offline: since its last sign of life, the best we know
    loaded.declare_capacity(2, {}, 11)
    assert loaded.max_agents == 2
