"""The reaper's rules over plain values (relay/domain/reaping.py): each edge once.

The whole pass over a real relay is the reaper machine's
(tests/property/test_reaper_machine.py); invariant 21
(tests/property/test_service_layer.py) ties these rules to the aggregates'.
"""

from __future__ import annotations

from relay.domain import reaping
from relay.domain.reaping import OfflineHost, Watched


def test_stale_is_online_and_silent_beyond_stale_after_counted_from_the_grace() -> None:
    assert reaping.is_stale("online", last_seen=1_000, now=7_001, stale_after_ms=6_000, grace_from=0)
    assert not reaping.is_stale("online", last_seen=1_000, now=7_000, stale_after_ms=6_000, grace_from=0)
    assert not reaping.is_stale("offline", last_seen=0, now=99_000, stale_after_ms=6_000, grace_from=0)
    # Silence before the relay started (or the reaper resumed) never counts.
    assert not reaping.is_stale("online", last_seen=1_000, now=9_000, stale_after_ms=6_000, grace_from=5_000)


def test_stale_keeps_order_and_skips_entities_without_a_known_version() -> None:
    ws = [
        Watched("agent", "a2", "online", 0, 3),
        Watched("agent", "a1", "online", 0, None),
        Watched("orchestrator", "o1", "online", 0, 7),
        Watched("agent", "a3", "online", 9_000, 1),
    ]
    assert [w.entity_id for w in reaping.stale(ws, 10_000, 5_000, 0)] == ["a2", "o1"]
    assert reaping.online_count(ws) == 4


def test_grace_starts_at_the_later_of_start_and_last_resume() -> None:
    assert reaping.grace_start(5_000, None) == 5_000
    assert reaping.grace_start(5_000, 9_000) == 9_000
    assert reaping.grace_start(5_000, 1_000) == 5_000


def test_overdue_is_strictly_past_a_deadline() -> None:
    deadlines = [("o2", [None, 10_000]), ("o1", [9_999]), ("o3", [None])]
    assert reaping.overdue(deadlines, 10_000) == ["o1"]
    assert reaping.overdue(deadlines, 10_001) == ["o1", "o2"]


def test_lost_needs_unknown_agents_for_longer_than_lost_after_or_a_pending_command() -> None:
    hosts = [
        OfflineHost("o1", 1_000, has_unknown_agents=True, has_pending_commands=False),
        OfflineHost("o2", 1_000, has_unknown_agents=False, has_pending_commands=False),
        OfflineHost("o3", None, has_unknown_agents=False, has_pending_commands=True),
        OfflineHost("o4", 5_000, has_unknown_agents=True, has_pending_commands=False),
    ]
    assert reaping.lost(hosts, now=6_001, lost_after_ms=5_000) == ["o1", "o3"]
