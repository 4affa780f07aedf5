"""Where a spawn goes: a pure choice among the hosts as the read model sees them.

Placement is a rule of the contract, not a detail of a handler, so it lives in
the domain: the read models hand it the ``HostView``s it needs (the few an
index says can fit, relay/projections/placement.py, or the whole fleet when
none does, so a refusal names the real reason), this module decides,
and the property tests (tests/domain/test_placement.py) check the decision on
thousands of fleets without a server. Nothing here reads the clock: whether a
host is online is decided by the caller from ``lastSeen`` and ``now``.

The order of the checks is also the order of the reasons a client is told,
so a 409 always names the first thing that rules every host out
(``no online host offers codex`` before ``all 3 matching hosts are full``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from attrs import field, frozen

from relay.domain.errors import ConflictError


@frozen
class HostView:
    """One orchestrator as placement needs it."""

    id: str
    hostname: str
    online: bool
    providers: tuple[str, ...]
    labels: Mapping[str, str] = field(factory=dict)
    max_agents: int | None = None  # None: no limit declared
    active_agents: int = 0

    @property
    def full(self) -> bool:
        return self.max_agents is not None and self.active_agents >= self.max_agents

    def matches(self, selector: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())

    def fits(self, provider: str, selector: Mapping[str, str]) -> bool:
        """Whether ``place`` may choose this host for ``provider`` and ``selector``."""
        return self.online and provider in self.providers and self.matches(selector) and not self.full

    def sort_key(self) -> tuple[int, str, str]:
        """Least loaded first: fewest active agents, then hostname, then id (deterministic)."""
        return (self.active_agents, self.hostname, self.id)


class NoPlacementError(ConflictError):
    """Raised when no host can take a spawn; the message says why (409)."""


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def place(
    hosts: Iterable[HostView], provider: str, selector: Mapping[str, str] | None = None
) -> HostView:
    """The online host that offers ``provider``, matches ``selector``, has room, and is least loaded.

    Raises NoPlacementError naming why no host fits. The result does not depend
    on the order of ``hosts``.
    """
    selector = selector or {}
    online = [h for h in hosts if h.online]
    offering = [h for h in online if provider in h.providers]
    if not offering:
        raise NoPlacementError(f"no online host offers {provider}")
    matching = [h for h in offering if h.matches(selector)]
    if not matching:
        raise NoPlacementError(
            f"none of the {_count(len(offering), 'online host')} offering {provider} "
            f"matches selector {_selector_text(selector)}"
        )
    free = [h for h in matching if not h.full]
    if not free:
        n = len(matching)
        raise NoPlacementError(
            f"all {n} matching hosts are full" if n != 1 else "the 1 matching host is full"
        )
    return min(free, key=HostView.sort_key)


def check_room(host: HostView) -> None:
    """A spawn to a named host that is full is refused, naming its capacity."""
    if host.full:
        raise NoPlacementError(
            f"orchestrator {host.id!r} is full ({host.active_agents} of {host.max_agents} agents)"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def eligible(
    hosts: Sequence[HostView], provider: str, selector: Mapping[str, str] | None = None
) -> list[HostView]:
    """Every host ``place`` may choose (for tests and for explaining a decision)."""
    selector = selector or {}
    return [h for h in hosts if h.fits(provider, selector)]
