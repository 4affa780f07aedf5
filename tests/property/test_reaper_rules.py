"""The reap rule itself, on the aggregates: no IO, no clock, any numbers.

The state machines reach the domain through the reaper's decision, which
already filters on staleness; so a wrong comparison in the aggregates' own
re-check (``is_stale``) could hide behind a right one in the decision. Here
the aggregates are asked directly, with the boundary drawn often.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.domain.agent import Agent
from relay.domain.errors import NotFoundError
from relay.domain.orchestrator import Orchestrator

TIMES = st.integers(0, 10**12)
STALE = st.integers(1, 10**7)
# around the boundary most of the time, anywhere some of the time
OFFSETS = st.one_of(st.integers(-3, 3), st.integers(-(10**7), 10**7))


def new_agent(at: int) -> Agent:
    return Agent("a", "a", None, [], None, [], {}, at)


def new_orchestrator(at: int) -> Orchestrator:
    o = Orchestrator("o", "host", "/srv", ["claude"], ["HOME"], {}, "0" * 64, at)
    o.report_managed_agents([{"agentId": "m1", "provider": "claude"}], at)
    o.request_spawn("c1", "claude", None, None, "guarded", None, "operator", at)
    return o


@pytest.mark.parametrize("make", [new_agent, new_orchestrator], ids=["agent", "orchestrator"])
@given(last_seen=TIMES, grace=TIMES, stale=STALE, offset=OFFSETS)
def test_reaped_exactly_when_online_and_silent_longer_than_stale_after(
    make: object, last_seen: int, grace: int, stale: int, offset: int
) -> None:
    """Invariants 3, 4, 8 and 10 on one aggregate: the rule, once, and nothing else."""
    agg = make(last_seen)  # type: ignore[operator]
    now = max(last_seen, grace) + stale + offset
    before = {k: copy.deepcopy(v) for k, v in vars(agg).items() if not k.startswith("_")}
    stale_now = now - max(last_seen, grace) > stale
    assert agg.reap(now, last_seen, stale, grace) is stale_now
    assert agg.status == ("offline" if stale_now else "online")
    assert agg.reap(now, last_seen, stale, grace) is False  # 4: a second time records nothing
    after = {k: v for k, v in vars(agg).items() if not k.startswith("_")}
    before.pop("status"), after.pop("status")
    # A reaped orchestrator also remembers since when it is offline (issue 15: lost agents).
    if stale_now and "offline_since" in before:
        assert after.pop("offline_since") == now
        before.pop("offline_since")
    assert after == before  # 8: the status is the only thing a reap changes


@pytest.mark.parametrize("make", [new_agent, new_orchestrator], ids=["agent", "orchestrator"])
@given(last_seen=TIMES, moved=st.integers(1, 10**6), stale=STALE)
def test_a_reap_judged_on_an_older_last_seen_records_nothing(
    make: object, last_seen: int, moved: int, stale: int
) -> None:
    """Invariant 5 on one aggregate: a heartbeat after the judgement wins."""
    agg = make(last_seen)  # type: ignore[operator]
    agg.heartbeat(last_seen + moved)
    now = last_seen + moved + 10 * stale
    assert agg.reap(now, last_seen, stale, 0) is False
    assert agg.status == "online"


@pytest.mark.parametrize("make", [new_agent, new_orchestrator], ids=["agent", "orchestrator"])
@given(last_seen=TIMES, stale=STALE)
def test_heartbeat_revives_and_removal_is_final(make: object, last_seen: int, stale: int) -> None:
    """Invariants 6 and 7 on one aggregate."""
    agg = make(last_seen)  # type: ignore[operator]
    now = last_seen + stale + 1
    assert agg.reap(now, last_seen, stale, 0)
    agg.heartbeat(now)
    assert agg.status == "online" and agg.last_seen == now
    agg.remove(now)
    assert agg.reap(now + 10 * stale, now, stale, 0) is False
    with pytest.raises(NotFoundError):
        agg.heartbeat(now + 1)
    assert agg.status == "removed"
