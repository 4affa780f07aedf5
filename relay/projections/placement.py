"""Placement's index: per provider, the hosts with room, least loaded first.

``relay.domain.placement.place`` is the rule; it is pure and looks at every
host it is given. Given the whole fleet on every spawn, building 1,000
``HostView``s cost a spawn several milliseconds (docs/benchmarks.md). The rule
picks the eligible host with the smallest ``HostView.sort_key`` (busy agents,
hostname, id), so it only ever needs the hosts in that order up to the first
one that fits. This index keeps that order, updated by the read models from
the orchestrator's own events, so a spawn walks a few entries instead of the
fleet (ADR 0037).

What the index can know without a clock is kept here: status ``online`` (as
recorded), the providers, and room (busy < maxAgents). What needs ``now``
(silent for longer than stale-after but not yet reaped) and the request (the
selector) is judged on the walk, by the domain's own ``HostView.fits``. When
no indexed host fits, the caller hands ``place`` the whole fleet, so a 409
names the same reason as before.

Busy = the host's active agents plus its spawns not yet over: the same count
the aggregate re-checks when it records the spawn (which stays the authority;
the read model may be a moment behind).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from relay.domain.placement import HostView
from relay.domain.rules import is_silent

SortKey = tuple[int, str, str]  # == HostView.sort_key(): (busy, hostname, id)


def busy(o: Mapping[str, Any], open_spawns: int) -> int:
    """Active agents (reported load, else reported agents) plus spawns on their way."""
    return int(o.get("activeAgents", len(o["managedAgents"]))) + open_spawns


def host_view(
    o: Mapping[str, Any], open_spawns: int, now: int, stale_after_ms: int, grace_from: int
) -> HostView:
    """One orchestrator as placement sees it at ``now``: online means heard from within stale-after."""
    return HostView(
        id=o["id"],
        hostname=o["hostname"],
        online=o["status"] == "online" and not is_silent(o["lastSeen"], now, stale_after_ms, grace_from),
        providers=tuple(o["providers"]),
        labels=o.get("labels") or {},
        max_agents=o.get("maxAgents"),
        active_agents=busy(o, open_spawns),
    )


class PlacementIndex:
    """For each provider, the recorded-online hosts with room, sorted by ``SortKey``.

    Internal to the read models and derived from them (never checkpointed;
    rebuilt on load). ``update`` is called for every event of an
    orchestrator that can change its entry; it costs a comparison when
    nothing placement cares about changed, and two bisections when it did.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[SortKey, list[str]]] = {}  # oid -> (key, providers)
        self._order: dict[str, list[SortKey]] = {}  # provider -> keys, ascending

    def update(self, oid: str, o: Mapping[str, Any] | None, open_spawns: int) -> None:
        """Re-file ``oid`` from its read-model record (None: removed)."""
        entry: tuple[SortKey, list[str]] | None = None
        if o is not None and o["status"] == "online":
            b = busy(o, open_spawns)
            cap = o.get("maxAgents")
            if cap is None or b < cap:
                entry = ((b, o["hostname"], oid), o["providers"])
        old = self._entries.get(oid)
        if old == entry:
            return
        if old is not None:
            for p in old[1]:
                keys = self._order[p]
                del keys[bisect_left(keys, old[0])]
        if entry is None:
            del self._entries[oid]
            return
        self._entries[oid] = (entry[0], list(entry[1]))
        for p in entry[1]:
            insort(self._order.setdefault(p, []), entry[0])

    def order(self, provider: str) -> list[SortKey]:
        """The keys of the hosts offering ``provider`` with room, least loaded first (do not mutate)."""
        return self._order.get(provider, [])

    def __len__(self) -> int:
        return len(self._entries)


def candidates(
    index: PlacementIndex,
    orchestrators: Mapping[str, Mapping[str, Any]],
    open_spawns: Callable[[str], int],
    provider: str,
    selector: Mapping[str, str],
    now: int,
    stale_after_ms: int,
    grace_from: int,
) -> Iterator[HostView]:
    """The indexed hosts for ``provider`` as views, in ``place``'s order, up to the first that fits.

    If it ends without a host that fits, no host fits: every host that could
    was in the index.
    """
    for key in index.order(provider):
        o = orchestrators[key[2]]
        view = host_view(o, open_spawns(key[2]), now, stale_after_ms, grace_from)
        yield view
        if view.fits(provider, selector):
            return
