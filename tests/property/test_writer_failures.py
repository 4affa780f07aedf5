"""A command that cannot be stored fails alone, and never leaves the live aggregates ahead of the log.

Issue 17: a save that failed for one command failed its whole batch but kept
the writer's in-memory copies of the entities, one version ahead of the log;
the next write recorded version 3 after a stored 2, ``relay audit verify``
failed for ever and, after a restart, every write to that entity failed.

``WriterFailureMachine`` runs batches through the real ``Writer`` (its own
thread, its real batching: every command of a batch is queued before the
thread starts) on a real SQLite file. A failure is injected into random
commands of random batches below the writer: the transcoder refuses to encode
an event whose ``at`` is marked, as it refuses any event it cannot store.
``Model`` is the rule written plainly: commands are decided in order as if
the failed ones had never come. After each batch the log must hold exactly
the events of the commands that landed, and every live aggregate must equal
what the log holds; ``restart`` opens a new application on the same file,
verifies the log as ``relay audit verify`` does and writes to every entity.

``KEEP_FAILED_COPIES`` restores the old bug (live copies are never forgotten)
so ``test_the_machine_catches_copies_left_ahead_of_the_log`` shows the
machine finds it (docs/invariants.md, W1-W3).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from relay import commands as c
from relay.application import RelayApp
from relay.audit.log import SqliteLog
from relay.audit.verify import verify
from relay.config import Settings
from relay.domain.errors import ConflictError, NotFoundError
from relay.store import SQLITE_FILE, store_env
from relay.writer import Writer

AGENTS = ("a1", "a2", "a3")
KINDS = ("register", "heartbeat", "remove")
T0 = 1_700_000_000_000
KEEP_FAILED_COPIES = False  # the deliberate bug: the old "keep live copies" behaviour


class InjectedFailure(Exception):
    """Raised by the test's transcoder for an event whose ``at`` is marked."""


@dataclass
class Model:
    """Which agents exist: the contract, with failed commands left out."""

    agents: dict[str, str] = field(default_factory=dict)  # id -> "present" | "removed"

    def outcome(self, kind: str, agent: str) -> str:
        """``ok`` or ``refused`` for the command on the current state (and apply it)."""
        present = self.agents.get(agent) == "present"
        if kind == "register":
            self.agents[agent] = "present"
            return "ok"
        if not present:
            return "refused"
        if kind == "remove":
            self.agents[agent] = "removed"
        return "ok"

    def would_be(self, kind: str, agent: str) -> str:
        present = self.agents.get(agent) == "present"
        return "ok" if kind == "register" or present else "refused"


def _command(kind: str, agent: str, at: int) -> c.Command:
    if kind == "register":
        return c.RegisterAgent(agent, agent, None, [], None, [], {"at": at}, at)
    if kind == "heartbeat":
        return c.HeartbeatAgent(agent, at)
    return c.RemoveAgent(agent, at)


# How a marked command fails: its event cannot be encoded, or the log refuses its
# insert as a clash (an IntegrityError no retry can cure).
POISONS = (None, None, "encode", "clash")
_step = st.tuples(st.sampled_from(KINDS), st.sampled_from(AGENTS), st.sampled_from(POISONS))


class WriterFailureMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-writer-"))
        self.model = Model()
        self.poisoned: set[int] = set()  # ats whose events cannot be encoded
        self.clashing: set[int] = set()  # ats whose events the log refuses to insert
        self.clock = T0
        self.loop = asyncio.new_event_loop()
        self.app = self._open()
        self.head = 0

    def _open(self) -> RelayApp:
        app = RelayApp(store_env(Settings(data_dir=self.dir)))
        encode = app.mapper.transcoder.encode
        poisoned = self.poisoned

        def failing_encode(obj: Any) -> bytes:
            if isinstance(obj, dict) and obj.get("at") in poisoned:
                raise InjectedFailure(f"injected: the event at {obj['at']} cannot be stored")
            return encode(obj)

        app.mapper.transcoder.encode = failing_encode  # type: ignore[method-assign]
        insert = app.recorder.insert_events
        clashing = self.clashing

        def clashing_insert(stored_events: list[Any], **kwargs: Any) -> Any:
            for se in stored_events:
                if any(b'"at":%d' % at in se.state for at in clashing):
                    raise IntegrityError("injected: the event clashes with the log")
            return insert(stored_events, **kwargs)

        app.recorder.insert_events = clashing_insert  # type: ignore[method-assign]
        if KEEP_FAILED_COPIES:
            app.forget = lambda aggregate_ids: None  # type: ignore[method-assign]
        return app

    def teardown(self) -> None:
        self.app.close()
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- driving the real writer ------------------------------------------------

    def _run_batch(self, cmds: list[c.Command]) -> tuple[list[BaseException | None], list[Any]]:
        """Queue every command, then let a writer thread take them as one batch."""
        handed: list[Any] = []

        def deliver(recordings: list[Any]) -> None:
            handed.extend(recordings)
            writer.applied(recordings[-1].notification.id)  # as the follower does once applied

        writer = Writer(self.app, self.loop, deliver)
        futures = [writer.submit(cmd) for cmd in cmds]
        writer.start()
        writer.stop()  # the thread takes the whole queue as one batch, then stops
        self.loop.run_until_complete(asyncio.sleep(0))
        return [f.exception() if f.done() else AssertionError("never answered") for f in futures], handed

    def _new_events(self) -> list[tuple[int, Any]]:
        notes = self.app.recorder.select_notifications(
            start=self.head, limit=10_000, inclusive_of_start=False
        )
        return [(n.id, self.app.mapper.to_domain_event(n)) for n in notes]

    # -- rules -------------------------------------------------------------------------

    @rule(steps=st.lists(_step, min_size=1, max_size=8))
    def batch(self, steps: list[tuple[str, str, str | None]]) -> None:
        cmds: list[c.Command] = []
        expected: list[str] = []
        landed_at: list[int] = []
        for kind, agent, poison in steps:
            self.clock += 1
            at = self.clock
            if poison == "encode":
                self.poisoned.add(at)
            elif poison == "clash":
                self.clashing.add(at)
            cmds.append(_command(kind, agent, at))
            if self.model.would_be(kind, agent) == "refused":
                expected.append("refused")
            elif poison:
                expected.append("failed")
            else:
                expected.append(self.model.outcome(kind, agent))
                landed_at.append(at)
        note(f"batch: {[(k, a, p or '') for k, a, p in steps]} -> {expected}")
        errors, handed = self._run_batch(cmds)
        for (kind, agent, _), want, err in zip(steps, expected, errors, strict=True):
            got = (
                "ok" if err is None
                else "refused" if isinstance(err, NotFoundError)
                else "failed" if isinstance(err, InjectedFailure | ConflictError)
                else f"unexpected {type(err).__name__}: {err}"
            )
            assert got == want, f"W1: {kind} {agent}: expected {want}, got {got}"
        events = self._new_events()
        # W1: every command that was not failed or refused landed, each once;
        # a failed command appended nothing.
        got_at = sorted(ev.at for _, ev in events)
        assert got_at == sorted(landed_at), f"W1: the log gained {got_at}, not {landed_at}"
        failed = self.poisoned | self.clashing
        assert not any(ev.at in failed for _, ev in events), "W1: a failed command landed"
        assert [r.notification.id for r in handed] == [p for p, _ in events]
        if events:
            self.head = events[-1][0]

    @rule()
    def restart(self) -> None:
        """A new application on the same file: the log verifies and every entity takes writes."""
        self.app.close()
        self.app = self._open()
        with SqliteLog(self.dir / SQLITE_FILE) as log:
            report = verify(log, None, gapless=True)
        assert report.ok, f"W3: verify failed after a restart: {report.problems}"
        self.clock += 1
        cmds = [
            _command("heartbeat" if self.model.agents[a] == "present" else "register", a, self.clock)
            for a in sorted(self.model.agents)
        ]
        errors, _ = self._run_batch(cmds)
        assert errors == [None] * len(cmds), f"W3: writes after a restart failed: {errors}"
        for a in self.model.agents:
            self.model.agents[a] = "present"
        self.head = self._new_events()[-1][0] if cmds else self.head

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def live_copies_equal_the_log(self) -> None:
        """W2: no live aggregate is ahead of (or behind) what the log holds of it."""
        for aggregate_id, agg in self.app.live.items():
            stored = [e.originator_version for e in self.app.recorder.select_events(aggregate_id)]
            assert stored == list(range(1, agg.version + 1)), (
                f"W2: the live copy of {aggregate_id} is at version {agg.version}, "
                f"the log holds versions {stored}"
            )
            assert not agg.pending_events, f"W2: {aggregate_id} holds unsaved events"

    @invariant()
    def live_agents_agree_with_the_model(self) -> None:
        for agent, state in self.model.agents.items():
            try:
                removed = self.app.agent(agent).removed
            except NotFoundError:
                removed = True
            assert removed == (state == "removed"), (agent, state)


TestWriterFailures = WriterFailureMachine.TestCase
TestWriterFailures.settings = settings(settings.default, stateful_step_count=15)
TestWriterFailures.pytestmark = [pytest.mark.slow]


def test_the_machine_catches_copies_left_ahead_of_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deliberate bug of docs/invariants.md W2: keep the live copies of a failed save."""
    monkeypatch.setattr(sys.modules[__name__], "KEEP_FAILED_COPIES", True)
    with pytest.raises(AssertionError, match=r"^W[123]: "):
        run_state_machine_as_test(
            WriterFailureMachine,
            settings=settings(
                settings.default,
                max_examples=200,
                stateful_step_count=15,
                phases=[Phase.generate],
                print_blob=False,
            ),
        )
