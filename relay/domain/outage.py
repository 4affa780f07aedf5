"""The reaper's brake: no mass reap when most of the fleet goes silent at once.

When the relay itself is cut off (its own network partition, a switch, DNS),
every host looks silent together. Reaping them all would be a lie, and every
later decision (expired commands, lost agents) would follow from it. So, like
Kubernetes' node lifecycle controller (no evictions while >= 55 % of a zone is
unhealthy) a pass that would reap more than ``max_fraction`` of the online
entities *and* more than ``max_min`` of them reaps none and suspends the
reaper; the first pass that would be under the threshold again resumes it,
and from that moment every entity gets a fresh ``stale_after`` grace before it
can be reaped (they could not reach us; their silence proves nothing).

Pure: the reaper (relay/service.py) counts, this module decides, and the
property tests drive it over random outage histories.
"""

from __future__ import annotations

import enum

from attrs import frozen


class PassDecision(enum.Enum):
    """What one reap pass does."""

    REAP = "reap"  # reap the candidates
    SUSPEND = "suspend"  # reap none; record ReapSuspended
    HOLD = "hold"  # still suspended; reap none, record nothing new
    RESUME = "resume"  # record ReapResumed; reap none (a fresh grace starts now)


@frozen
class ReapBrake:
    """The threshold, from ``--max-reap-fraction`` and ``--max-reap-min``."""

    max_fraction: float = 0.5
    max_min: int = 10

    def over(self, would_reap: int, online: int) -> bool:
        """Whether reaping ``would_reap`` of ``online`` entities at once looks like an outage."""
        return would_reap > self.max_min and would_reap > self.max_fraction * online

    def decide(self, suspended: bool, would_reap: int, online: int, force: bool = False) -> PassDecision:
        """One pass's decision, given whether the reaper is suspended now.

        ``force`` is an operator's explicit ``POST /api/system/reap?force=true``:
        it reaps whatever is stale, once, whatever the threshold says.
        """
        if force:
            return PassDecision.REAP
        over = self.over(would_reap, online)
        if suspended:
            return PassDecision.HOLD if over else PassDecision.RESUME
        return PassDecision.SUSPEND if over else PassDecision.REAP
