"""Placement's index chooses exactly what the rule chooses over the whole fleet.

``ReadModels.placement_candidates`` hands ``place`` only the few hosts an
incrementally kept index says can fit (ADR 0037); ``ReadModels.host_views``
hands it every host, as the handler did before the index. This machine
drives real ``Orchestrator`` aggregates through every event that moves a host
in or out of that order (registration, re-registration with another hostname
or providers, capacity, heartbeats with and without load, reports, spawns,
starts, results, expiry, reaps, removal, registration after removal), folds
their events into ``ReadModels`` one by one, sometimes reloads the read models
from a checkpoint (the index is rebuilt, not stored), and after every step
requires, for every provider, selector, grace and a few moments: same host, or
the same refusal word for word.

No IO and no clock: aggregates, read models and a number for ``now``.
Deliberate bugs it catches are listed in docs/invariants.md (P1).
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from relay.domain.errors import RelayError
from relay.domain.orchestrator import OPEN_COMMAND_STATES, Orchestrator
from relay.domain.placement import NoPlacementError, place
from relay.projections.readmodels import ReadModels

STALE_MS = 9_000
T0 = 1_700_000_000_000
HOSTS = ("o1", "o2", "o3", "o4", "o5", "o6")
HOSTNAMES = ("alpha", "beta")  # ties on load and hostname are common: the id decides
PROVIDER_SETS = (("claude",), ("claude", "codex"), ("codex",))
PROVIDERS = ("claude", "codex", "gemini")  # gemini: offered by nobody
SELECTORS: tuple[dict[str, str], ...] = ({}, {"zone": "x"}, {"zone": "y"}, {"zone": "x", "gpu": "yes"})
LABELS = ({}, {"zone": "x"}, {"zone": "y"}, {"zone": "x", "gpu": "yes"})


def outcome(hosts: Any, provider: str, selector: dict[str, str]) -> str:
    try:
        return place(hosts, provider, selector).id
    except NoPlacementError as e:
        return "refused: " + e.message


class PlacementIndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.rm = ReadModels()
        self.aggs: dict[str, Orchestrator] = {}
        self.seq = 0

    # -- plumbing ---------------------------------------------------------------------

    def _fold(self, agg: Orchestrator) -> None:
        for ev in agg.collect_events():
            self.rm.apply(self.rm.position + 1, ev)

    def _try(self, oid: str, what: str, call: Any) -> None:
        """Run one domain call; a refusal (full, offline, over) records nothing, as in the relay."""
        agg = self.aggs[oid]
        try:
            call(agg)
        except RelayError as e:
            note(f"{what} {oid}: refused ({e})")
            agg.collect_events()
            return
        note(f"{what} {oid} at T0+{self.now - T0}")
        self._fold(agg)

    def _present(self) -> list[str]:
        return sorted(oid for oid, a in self.aggs.items() if not a.removed)

    def _open(self) -> list[tuple[str, str]]:
        return sorted(
            (oid, cid)
            for oid, a in self.aggs.items()
            if not a.removed
            for cid, status in a.commands.items()
            if status in OPEN_COMMAND_STATES
        )

    # -- rules ------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        for i, oid in enumerate(HOSTS[:3]):
            self.register(oid, HOSTNAMES[0], PROVIDER_SETS[1], 2, i + 1)

    @rule(
        oid=st.sampled_from(HOSTS),
        hostname=st.sampled_from(HOSTNAMES),
        providers=st.sampled_from(PROVIDER_SETS),
        cap=st.one_of(st.none(), st.integers(1, 3)),
        labels=st.integers(0, len(LABELS) - 1),
    )
    def register(
        self, oid: str, hostname: str, providers: tuple[str, ...], cap: int | None, labels: int
    ) -> None:
        fields: dict[str, Any] = {
            "hostname": hostname, "base_dir": "/srv", "providers": list(providers),
            "env_keys": [], "meta": {}, "token_hash": "0" * 64, "at": self.now,
        }
        agg = self.aggs.get(oid)
        if agg is None:
            agg = self.aggs[oid] = Orchestrator(orchestrator_id=oid, **fields)
        else:
            agg.reregister(**fields)
        agg.declare_capacity(cap, dict(LABELS[labels]), self.now)
        note(f"register {oid} {hostname} {providers} max {cap} labels {LABELS[labels]}")
        self._fold(agg)

    @precondition(lambda self: bool(self._present()))
    @rule(data=st.data(), load=st.one_of(st.none(), st.integers(0, 3)))
    def heartbeat(self, data: st.DataObject, load: int | None) -> None:
        oid = data.draw(st.sampled_from(self._present()), label="host")
        body = None if load is None else {"activeAgents": load}
        self._try(oid, f"heartbeat load={load}", lambda a: a.heartbeat(self.now, body))

    @precondition(lambda self: bool(self._present()))
    @rule(data=st.data(), n=st.integers(0, 3))
    def report(self, data: st.DataObject, n: int) -> None:
        oid = data.draw(st.sampled_from(self._present()), label="host")
        agents = [
            {"agentId": f"{oid}-m{i}", "provider": "claude", "tmuxSession": f"t{i}", "cwd": "/srv",
             "approvalMode": "guarded", "startedAt": self.now}
            for i in range(n)
        ]
        self._try(oid, f"report {n} agents", lambda a: a.report_managed_agents(agents, self.now))

    @precondition(lambda self: bool(self._present()))
    @rule(data=st.data(), provider=st.sampled_from(PROVIDERS[:2]))
    def spawn(self, data: st.DataObject, provider: str) -> None:
        oid = data.draw(st.sampled_from(self._present()), label="host")
        self.seq += 1
        cid = f"c{self.seq}"
        self._try(
            oid,
            f"spawn {provider} {cid}",
            lambda a: a.request_spawn(
                cid, provider, None, None, "guarded", None, "op", self.now,
                STALE_MS, 0, self.now + 2 * STALE_MS,
            ),
        )

    @precondition(lambda self: bool(self._open()))
    @rule(data=st.data(), what=st.sampled_from(["start", "result", "expire"]))
    def command(self, data: st.DataObject, what: str) -> None:
        oid, cid = data.draw(st.sampled_from(self._open()), label="command")
        if what == "start":
            self._try(oid, f"start {cid}", lambda a: a.start_command(cid, self.now))
        elif what == "result":
            self._try(
                oid, f"result {cid}", lambda a: a.record_command_result(cid, "done", None, None, self.now)
            )
        else:
            self._try(oid, f"expire {cid}", lambda a: a.expire_commands([cid], "deadline passed", self.now))

    @precondition(lambda self: bool(self._present()))
    @rule(data=st.data())
    def reap(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self._present()), label="host")
        self._try(oid, "reap", lambda a: a.reap(self.now, a.last_seen, STALE_MS, 0))

    @precondition(lambda self: bool(self._present()))
    @rule(data=st.data(), load=st.one_of(st.none(), st.integers(0, 3)))
    def blip(self, data: st.DataObject, load: int | None) -> None:
        """A host falls silent, is reaped, and comes back: the commonest way out and in again."""
        oid = data.draw(st.sampled_from(self._present()), label="host")
        self.now += STALE_MS + 1
        self._try(oid, "reap", lambda a: a.reap(self.now, a.last_seen, STALE_MS, 0))
        body = None if load is None else {"activeAgents": load}
        self._try(oid, f"heartbeat load={load}", lambda a: a.heartbeat(self.now, body))

    @precondition(lambda self: bool(self._present()))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(self._present()), label="host")
        self._try(oid, "remove", lambda a: a.remove(self.now))

    @rule(ms=st.sampled_from([1, STALE_MS // 2, STALE_MS, STALE_MS + 1]))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule()
    def reload_from_checkpoint(self) -> None:
        """A restart: the index is not in the checkpoint; loading rebuilds it."""
        self.rm = ReadModels.from_state(orjson.loads(orjson.dumps(self.rm.to_state())))
        note("read models reloaded from a checkpoint")

    # -- the invariant ------------------------------------------------------------------

    @invariant()
    def p1_the_index_chooses_what_the_rule_chooses_over_every_host(self) -> None:
        """The walk alone, without the handler's fallback to the whole fleet (which would
        hide a host missing from the index behind a right answer found slowly)."""
        for now in (self.now, self.now + STALE_MS + 1):  # and some hosts silent by the clock
            for grace in (0, now - STALE_MS // 2):
                fleet = self.rm.host_views(now, STALE_MS, grace)
                for provider in PROVIDERS:
                    for selector in SELECTORS:
                        every = outcome(fleet, provider, selector)
                        walk = self.rm.placement_walk(provider, selector, now, STALE_MS, grace)
                        found = walk and walk[-1].fits(provider, selector)
                        indexed = outcome(walk, provider, selector) if found else "refused"
                        assert indexed == every or (not found and every.startswith("refused")), (
                            f"P1: at T0+{now - T0} (grace {grace and grace - T0}) {provider} {selector}: "
                            f"the index gave {indexed!r} after walking {[h.id for h in walk]}, "
                            f"the rule over every host {every!r}"
                        )


def test_placement_index_machine() -> None:
    """Each step checks 48 (moment, grace, provider, selector) cases: fewer, shorter runs suffice."""
    base = settings.default
    run_state_machine_as_test(
        PlacementIndexMachine,
        settings=settings(base, max_examples=max(10, base.max_examples // 2), stateful_step_count=30),
    )
