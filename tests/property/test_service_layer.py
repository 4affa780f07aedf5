"""Invariants 20-22: the service layer without callbacks (issue 13, ADR 0030).

20. **A write is answered only once applied**: the writer answers a command
    when, and only when, "applied up to N" has reached the last position it
    wrote (or at once when it failed or wrote nothing), whatever the order of
    hand-overs and ``applied`` calls.
21. **The reaper's judgment is the aggregates' own**: the candidates read from
    the read models are exactly the watched entities whose live aggregate says
    ``is_stale`` at that moment (one rule, relay/domain/reaping.py).
22. **No decision on a copy another node has overtaken**: with two nodes on one
    log, once the follower has published what it fetched, every command of the
    other node decides on the stored version (it never clashes on save).

docs/invariants.md names the deliberate bug each one catches.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from relay import commands as c
from relay.application import RelayApp
from relay.config import Settings
from relay.domain.agent import Agent
from relay.domain.orchestrator import Orchestrator
from relay.projections.readmodels import ReadModels
from relay.service import reap_candidates
from relay.store import store_env
from relay.store.versions import KnownVersions
from relay.writer import Outcome, Writer

# -- 20: outcomes answered by applied(N) ---------------------------------------------------


class _Note:
    def __init__(self, position: int) -> None:
        self.id = position


class _Recording:
    def __init__(self, position: int) -> None:
        self.notification = _Note(position)


batches = st.lists(
    st.lists(st.one_of(st.integers(0, 3), st.just(-1)), min_size=1, max_size=4),  # -1: failed
    min_size=1,
    max_size=6,
)


@given(batches, st.lists(st.integers(0, 3), max_size=8), st.randoms(use_true_random=False))
def test_a_write_is_answered_only_once_applied(plan: list[list[int]], lags: list[int], rnd: Any) -> None:
    loop = asyncio.new_event_loop()
    outs: list[Outcome] = []
    try:
        applied_calls: list[int] = []

        def deliver(recordings: list[Any]) -> None:
            pass  # the applier answers later, in its own time (the steps below)

        writer = Writer(None, loop, deliver)  # type: ignore[arg-type]  # no thread, no app needed
        head = 0
        lag_iter = iter(lags)
        for batch in plan:
            recordings = []
            for step in batch:
                out = Outcome(loop.create_future())
                if step < 0:
                    out.error = RuntimeError("refused")
                elif step > 0:
                    head += step
                    out.position = head
                    recordings.append(_Recording(head))
                outs.append(out)
            writer._answer(recordings, outs[-len(batch) :])
            # The applier catches up partly: up to a random lag behind the head.
            upto = max(0, head - next(lag_iter, 0))
            if rnd.random() < 0.7:
                writer.applied(upto)
                applied_calls.append(upto)
            best = max(applied_calls, default=0)
            for out in outs:
                due = out.error is not None or out.position <= best
                assert out.future.done() == due, (out.position, best, out.error)
                if out.future.done() and out.error is None:
                    assert out.position <= best
        writer.applied(head)
        assert all(o.future.done() for o in outs)
        note(f"applied calls {applied_calls}")
    finally:
        for o in outs:
            if o.future.done() and o.error is not None:
                o.future.exception()  # retrieved: no "never retrieved" warnings
        loop.close()


# -- 21: the reaper's candidates are the aggregates' own judgment ---------------------------

ENTITIES = ("a1", "a2", "o1", "o2")
op = st.tuples(st.sampled_from(ENTITIES), st.sampled_from(["beat", "remove"]), st.integers(1, 4_000))


@given(st.lists(op, max_size=25), st.integers(0, 12_000), st.integers(0, 6_000))
def test_the_reapers_candidates_are_the_aggregates_judgment(
    ops: list[tuple[str, str, int]], later: int, grace: int
) -> None:
    app, rm = RelayApp(), ReadModels()
    at = 1_000

    def run(cmd: Any) -> None:
        try:
            _, touched = app.execute(cmd)
        except Exception:
            app.forget_pending()
            return
        for rec in app.save(*touched):
            rm.apply(rec.notification.id, rec.domain_event)

    for e in ENTITIES:
        if e.startswith("o"):
            run(c.RegisterOrchestrator.of(e, "h", "/srv", ["claude"], [], {}, "0" * 64, at))
        else:
            run(c.RegisterAgent(e, e, None, [], None, [], {}, at))
    for entity, what, dt in ops:
        at += dt
        if entity.startswith("o"):
            run(c.HeartbeatOrchestrator(entity, at) if what == "beat" else c.RemoveOrchestrator(entity, at))
        else:
            run(c.HeartbeatAgent(entity, at) if what == "beat" else c.RemoveAgent(entity, at))
    now, stale_ms, grace_from = at + later, 5_000, 1_000 + grace
    judged = {(k.kind, k.entity_id) for k in reap_candidates(rm, now, stale_ms, grace_from)}
    own = set()
    for e in ENTITIES:
        cls = Orchestrator if e.startswith("o") else Agent
        agg = app.find(cls, e)  # type: ignore[type-var]
        if agg is not None and agg.is_stale(now, stale_ms, grace_from):
            own.add(("orchestrator" if e.startswith("o") else "agent", e))
    assert judged == own


# -- 22: two nodes, one log: the board keeps the writer on the stored version --------------


@given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=12))
def test_no_decision_on_a_copy_another_node_overtook(tmp_path_factory: Any, writers: list[str]) -> None:
    folder: Path = tmp_path_factory.mktemp("two-nodes")
    env = store_env(Settings(data_dir=folder))
    nodes = {"a": RelayApp(env), "b": RelayApp(env)}
    for node in nodes.values():
        node.known_versions = KnownVersions()
    at = 1_000
    a = nodes["a"]
    _, touched = a.execute(c.RegisterOrchestrator.of("o1", "h", "/srv", ["claude"], [], {}, "0" * 64, at))
    a.save(*touched)
    for who in writers:
        at += 1
        node, other = nodes[who], nodes["b" if who == "a" else "a"]
        _, touched = node.execute(c.HeartbeatOrchestrator("o1", at))
        recordings = node.save(*touched)  # an IntegrityError here: decided on a stale copy
        # What the other node's follower does after fetching this write from the store.
        assert other.known_versions is not None
        other.known_versions.publish(
            (r.domain_event.originator_id, r.domain_event.originator_version) for r in recordings
        )
    stored = a.repository.get(Orchestrator.create_id("o1")).version
    for node in nodes.values():
        assert node.orchestrator("o1").version == stored
