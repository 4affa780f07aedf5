"""The reaper's rules, once: who is stale, who is watched, what is overdue, who is lost.

Pure, over plain values: the runtime (relay/service.py) reads the read
models into these small records on each pass, asks these functions, and
sends the commands they imply through the writer; the aggregates ask
``is_stale`` again when the reap is recorded (the heartbeat that raced in
wins). The brake that holds a mass reap back is relay/domain/outage.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import frozen

from relay.domain.rules import is_silent

ONLINE = "online"
OFFLINE = "offline"


def grace_start(started_at: int, resumed_at: int | None) -> int:
    """Silence before this moment never counts: the relay's start, or the reaper's last resume
    (ADR 0019: every entity gets a fresh stale-after from a resume)."""
    return max(started_at, int(resumed_at or 0))


def is_stale(status: str, last_seen: int, now: int, stale_after_ms: int, grace_from: int) -> bool:
    """Online, and silent for longer than stale-after at ``now``: the one staleness rule.

    The reaper judges the read models with it, and each aggregate judges
    itself with it again when the reap is recorded.
    """
    return status == ONLINE and is_silent(last_seen, now, stale_after_ms, grace_from)


@frozen
class Watched:
    """An entity the reaper watches: an orchestrator, or an agent that is not one's own record."""

    kind: str  # "orchestrator" | "agent"
    entity_id: str
    status: str
    last_seen: int
    version: int | None  # the aggregate version it was judged at (None: not in the log yet)


def stale(watched: Iterable[Watched], now: int, stale_after_ms: int, grace_from: int) -> list[Watched]:
    """Who is stale at ``now``, in the given order; only those with a known version (the reap's check)."""
    return [
        w
        for w in watched
        if w.version is not None and is_stale(w.status, w.last_seen, now, stale_after_ms, grace_from)
    ]


def online_count(watched: Iterable[Watched]) -> int:
    """How many watched entities are online (the brake's denominator)."""
    return sum(w.status == ONLINE for w in watched)


def overdue(deadlines: Iterable[tuple[str, Iterable[int | None]]], now: int) -> list[str]:
    """Orchestrators with an open command past its deadline at ``now``, sorted.

    ``deadlines``: each orchestrator with the deadlines of its pending and
    running commands (None: no deadline).
    """
    return sorted(oid for oid, ds in deadlines if any(d is not None and now > d for d in ds))


@frozen
class OfflineHost:
    """An offline orchestrator, as the lost-agents rule needs it."""

    orchestrator_id: str
    offline_since: int | None
    has_unknown_agents: bool  # a managed agent whose state the host could not report
    has_pending_commands: bool  # a command it was asked to run and never started


def lost(hosts: Iterable[OfflineHost], now: int, lost_after_ms: int) -> list[str]:
    """Offline orchestrators with pending commands (they will not start them), or whose
    agents have been unknown for longer than ``lost_after_ms``; sorted."""
    out = []
    for h in hosts:
        gone_long = (
            h.offline_since is not None and now - h.offline_since > lost_after_ms and h.has_unknown_agents
        )
        if gone_long or h.has_pending_commands:
            out.append(h.orchestrator_id)
    return sorted(out)
