"""Invariant 18: a managed agent's attention is what its facts say (issue 16, ADR 0032, 0033).

Any sequence of host reports (attention, resumes, repeats, agent lists that drop
and bring back agents) and operator answers (input commands that are done, fail
or expire) goes through the real application and read models the way the
writer drives them; a plain model written from the contract says what each
agent's attention must be. Checked after every step: the read models agree
with the model, a repeat appended nothing, and a replay of the log from
position 0 folds to the same read models.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, note
from hypothesis import strategies as st

from relay import commands as c
from relay.application import RelayApp
from relay.domain.errors import RelayError
from relay.projections.readmodels import ReadModels

# Few names, so that reports meet the same agent again, repeats happen and an agent
# dropped from the list comes back (where a stale aggregate would show).
AGENTS = ("m1", "m2")
REASONS = ("r1", "r2")

report = st.tuples(
    st.just("report"), st.sampled_from(AGENTS), st.sampled_from(["input", "idle", None]),
    st.sampled_from(REASONS),
)
listing = st.tuples(st.just("list"), st.sets(st.sampled_from(AGENTS)).map(sorted))
answer = st.tuples(
    st.just("answer"), st.sampled_from(AGENTS), st.sampled_from(["done", "failed", "expired"])
)
OPS = st.lists(st.one_of(report, report, answer, listing), max_size=30)


class Relay:
    """RelayApp and ReadModels, driven as the writer drives them (execute, save, fold)."""

    def __init__(self) -> None:
        self.app = RelayApp()
        self.rm = ReadModels()
        self.at = 1_000
        self.run(c.RegisterOrchestrator.of("o", "h", "/srv", ["claude"], [], {}, "0" * 64, self.at))

    def run(self, cmd: Any) -> bool:
        """Execute ``cmd``; False when refused (and nothing appended)."""
        self.at += 1
        try:
            _, touched = self.app.execute(cmd)
        except RelayError:
            self.app.forget_pending()
            return False
        for rec in self.app.save(*touched):
            self.rm.apply(rec.notification.id, rec.domain_event)
        return True

    def attention(self) -> dict[str, tuple[str, str]]:
        return {
            m["agentId"]: (m["attention"], m["attentionReason"])
            for m in self.rm.managed_agents()
            if m["attention"] is not None
        }

    def head(self) -> int:
        return self.rm.position


@given(OPS)
# An agent dropped from the list and back, then reported as before: news again.
@example([("report", "m1", "input", "r1"), ("list", ["m2"]), ("list", ["m1", "m2"]),
          ("report", "m1", "input", "r1")])
def test_attention_follows_its_facts(ops: list[tuple[Any, ...]]) -> None:
    relay = Relay()
    everyone = [{"agentId": a, "provider": "claude", "tmuxSession": a} for a in AGENTS]
    assert relay.run(c.ReportManagedAgents("o", everyone, relay.at))
    listed: set[str] = set(AGENTS)
    model: dict[str, tuple[str, str]] = {}  # the contract, written plainly
    n = 0
    for op in ops:
        note(repr(op))
        at = relay.at
        if op[0] == "list":
            agents = [{"agentId": a, "provider": "claude", "tmuxSession": a} for a in op[1]]
            assert relay.run(c.ReportManagedAgents("o", agents, at))
            listed = set(op[1])
            model = {a: v for a, v in model.items() if a in listed}  # gone: waits for nobody
        elif op[0] == "report":
            _, agent, attention, reason = op
            head = relay.head()
            taken = relay.run(c.ReportAttention("o", agent, attention, reason, "excerpt", at))
            assert taken == (agent in listed)
            repeat = (model.get(agent) == (attention, reason)) if attention else agent not in model
            if taken and repeat:
                assert relay.head() == head, "a repeat appended to the log"
            if taken:
                if attention is None:
                    model.pop(agent, None)
                else:
                    model[agent] = (attention, reason)
        else:
            _, agent, outcome = op
            n += 1
            cid = f"c{n}"
            deadline = at + 10
            if relay.run(c.RequestInput("o", cid, agent, "y", True, "operator", at, deadline_at=deadline)):
                assert agent in listed
                if outcome == "expired":
                    relay.at = deadline + 1
                    assert relay.run(c.ExpireCommands(relay.at, overdue=("o",)))
                else:
                    assert relay.run(c.RecordCommandResult("o", cid, outcome, None, agent, relay.at))
                if outcome == "done":
                    model.pop(agent, None)  # the answer resumes whatever it waited for
        assert relay.attention() == model
    rebuilt = ReadModels()
    for notification in relay.app.recorder.select_notifications(start=1, limit=10_000):
        rebuilt.apply(notification.id, relay.app.mapper.to_domain_event(notification))
    assert rebuilt.comparable() == relay.rm.comparable()
