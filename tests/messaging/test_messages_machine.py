"""Messages, claims and leases as one state machine on a fake clock.

Drives ``RelayApp`` as the writer thread does (``execute``, ``save``, fold each
recording into the read models), with time as data: a ``FakeClock`` that only
``advance`` moves, so "exactly at leaseUntil" is as reachable as any moment.
The reaper's decision is the service's own (``expired_claims`` on the read
model), recorded either at once or with another write landing between the
decision and the record (``reap_overtaken``: the race).

Beside it runs ``Model``, the rules written plainly from the issue: who may
claim, how long a claim holds, what an ack needs. The invariants (the
"Messaging" section of docs/invariants.md) compare the relay with the model,
and the log with itself through ``MessageAudit``, a second reading of the
raw events that knows nothing of the aggregate or the read model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from relay import commands as c
from relay.application import RelayApp
from relay.clock import FakeClock
from relay.domain.errors import ConflictError, NotFoundError, RelayError
from relay.domain.message import Message, broadcast_copy_id
from relay.projections.messages import expired_claims, recipients
from relay.projections.readmodels import ReadModels

T0 = 1_700_000_000_000
AGENTS = {"a1": ["red"], "a2": ["red", "blue"], "a3": ["blue"]}
TARGETS = ["a1", "a2", "a3", "tag:red", "tag:blue", "*"]
SENDERS = ["a1", "a2", "ops"]
LEASES_MS = [1, 500, 1_000, 2_000]


# -- the model: the rules, plainly ----------------------------------------------------------


@dataclass
class Msg:
    recipient: str
    status: str = "pending"
    claim: str | None = None
    lease_until: int = 0
    old_claims: set[str] = field(default_factory=set)


class Model:
    def __init__(self) -> None:
        self.msgs: dict[str, Msg] = {}

    def holds(self, m: Msg, agent: str, claim: str | None, now: int) -> bool:
        return (
            m.status == "claimed"
            and m.recipient == agent
            and (claim is None or claim == m.claim)
            and now <= m.lease_until
        )


# -- the audit: a second reading of the log ----------------------------------------------------


@dataclass
class Seen:
    recipient: str
    status: str = "pending"
    claim: str | None = None
    claimant: str | None = None
    lease_until: int = 0
    expired: set[str] = field(default_factory=set)


class MessageAudit:
    """Folds raw Message events and records every invariant it sees broken."""

    def __init__(self) -> None:
        self.seen: dict[Any, Seen] = {}
        self.violations: list[str] = []

    def feed(self, position: int, ev: Any) -> None:
        topic = type(ev).TOPIC
        if not topic.startswith("Message"):
            return
        key = ev.originator_id
        if topic in ("MessageSent", "MessageDelivered"):  # a copy of a broadcast: ADR 0014
            self.seen[key] = Seen(ev.recipient)
            return
        s = self.seen.get(key)
        if s is None:
            self.violations.append(f"{position} {topic}: for a message never sent")
            return
        bad = self.violations.append
        if s.status == "deleted":
            bad(f"{position} {topic}: after the message was deleted")
        if topic == "MessageClaimed":
            if s.status == "claimed":
                bad(f"{position}: claimed by {ev.agent_id} while {s.claimant}'s claim {s.claim} lives")
            if ev.agent_id != s.recipient:
                bad(f"{position}: claimed by {ev.agent_id}, not its recipient {s.recipient}")
            if s.status == "acked":
                bad(f"{position}: claimed after it was acked")
            s.status, s.claim, s.claimant, s.lease_until = "claimed", ev.claim_id, ev.agent_id, ev.lease_until
        elif topic == "MessageClaimExpired":
            if s.status != "claimed" or s.claim != ev.claim_id:
                bad(f"{position}: expired claim {ev.claim_id}, which is not the live claim ({s.claim})")
            if ev.claim_id in s.expired:
                bad(f"{position}: claim {ev.claim_id} expired twice")
            if ev.at <= s.lease_until:
                bad(f"{position}: claim {ev.claim_id} expired at {ev.at}, within its lease ({s.lease_until})")
            s.expired.add(ev.claim_id)
            s.status, s.claim, s.claimant = "pending", None, None
        elif topic in ("MessageAcked", "MessageClaimReleased"):
            if s.status != "claimed" or s.claim != ev.claim_id or s.claimant != ev.agent_id:
                bad(f"{position}: {topic} by {ev.agent_id} under {ev.claim_id} without holding the claim")
            if ev.at > s.lease_until:
                bad(f"{position}: {topic} at {ev.at} after the lease ended at {s.lease_until}")
            s.status = "acked" if topic == "MessageAcked" else "pending"
            if topic == "MessageClaimReleased":
                s.claim, s.claimant = None, None
        elif topic == "MessageDeleted":
            s.status, s.claim, s.claimant = "deleted", None, None
        else:
            bad(f"{position}: an unknown message event {topic}")


# -- the machine ---------------------------------------------------------------------------------


class MessagesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(T0)
        self.app = RelayApp()  # in-memory store: this machine is about rules, not disks
        self.rm = ReadModels()
        self.model = Model()
        self.audit = MessageAudit()
        self.ids = itertools.count()
        self.released: list[tuple[int, list[str]]] = []  # (now, released ids) per reap
        for aid, tags in AGENTS.items():
            self._run(c.RegisterAgent(aid, aid, None, tags, None, [], {}, self.clock.now_ms()))

    def teardown(self) -> None:
        self.app.close()

    @property
    def now(self) -> int:
        return self.clock.now_ms()

    def _head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def _run(self, cmd: c.Command) -> Any:
        result, aggs = self.app.execute(cmd)
        for r in self.app.save(*aggs) if aggs else []:
            self.rm.apply(r.notification.id, r.domain_event)
            self.audit.feed(r.notification.id, r.domain_event)
        return result

    def _expect(self, cmd: c.Command, error: type[RelayError] | None) -> Any:
        """Run ``cmd``; it must be refused with ``error`` (appending nothing) or accepted."""
        head = self._head()
        if error is None:
            return self._run(cmd)
        try:
            self.app.execute(cmd)
        except RelayError as e:
            assert type(e) is error, f"{cmd} refused with {e!r}, expected {error.__name__}"
        else:
            raise AssertionError(f"{cmd} was accepted; the model expected {error.__name__}")
        assert self._head() == head, f"a refused {type(cmd).__name__} appended to the log"
        return None

    def _pick(self, data: st.DataObject) -> str:
        """Any message, but claimed ones half the time: that is where the rules are."""
        claimed = sorted(k for k, m in self.model.msgs.items() if m.status == "claimed")
        pool = claimed if claimed and data.draw(st.booleans(), label="a claimed one") else None
        return data.draw(st.sampled_from(pool or sorted(self.model.msgs)), label="message")

    def _who(self, data: st.DataObject, mid: str) -> str:
        """Usually the recipient (the only one who may claim), sometimes anyone."""
        anyone = data.draw(st.none() | st.sampled_from(sorted(AGENTS)), label="agent (None: recipient)")
        return anyone or self.model.msgs[mid].recipient

    # -- rules ----------------------------------------------------------------------------------

    @rule(sender=st.sampled_from(SENDERS), to=st.sampled_from(TARGETS), urgent=st.booleans())
    def send(self, sender: str, to: str, urgent: bool) -> None:
        targets = recipients(self.rm, to, sender)
        broadcast = None if to in AGENTS else f"b{next(self.ids)}"
        deliveries = tuple(
            c.Delivery(broadcast_copy_id(broadcast, r) if broadcast else f"m{next(self.ids)}", r)
            for r in targets
        )
        cmd = c.SendMessage(
            sender,
            to,
            "message",
            None,
            "x",
            {"priority": "urgent" if urgent else "normal"},
            broadcast,
            deliveries,
            self.now,
        )
        if not targets:
            self._expect(cmd, NotFoundError)
            return
        ids = self._expect(cmd, None)
        assert ids == [d.message_id for d in deliveries]
        for d in deliveries:
            self.model.msgs[d.message_id] = Msg(d.recipient)
        note(f"send {sender} -> {to}: {ids}")

    @precondition(lambda self: bool(self.model.msgs))
    @rule(data=st.data(), lease=st.sampled_from(LEASES_MS))
    def claim(self, data: st.DataObject, lease: int) -> None:
        mid = self._pick(data)
        agent = self._who(data, mid)
        m = self.model.msgs[mid]
        claim_id = f"c{next(self.ids)}"
        cmd = c.ClaimMessage(mid, agent, claim_id, lease, self.now)
        live = m.status == "claimed" and self.now <= m.lease_until
        if m.status in ("acked", "deleted") or agent != m.recipient or live:
            self._expect(cmd, ConflictError)
            return
        self._expect(cmd, None)
        if m.claim is not None:
            m.old_claims.add(m.claim)
        m.status, m.claim, m.lease_until = "claimed", claim_id, self.now + lease
        note(f"claim {mid} by {agent} as {claim_id} until T0+{m.lease_until - T0}")

    def _holder_rule(self, data: st.DataObject, which: str, make: Callable[..., Any]) -> None:
        mid = self._pick(data)
        agent = self._who(data, mid)
        m = self.model.msgs[mid]
        claim_id = {"none": None, "current": m.claim, "old": min(m.old_claims, default=None)}[which]
        cmd = make(mid, agent, claim_id, self.now)
        if not self.model.holds(m, agent, claim_id, self.now):
            self._expect(cmd, ConflictError)
            return
        self._expect(cmd, None)
        m.old_claims.add(str(m.claim))
        if isinstance(cmd, c.AckMessage):
            m.status = "acked"
        else:
            m.status, m.claim = "pending", None
        note(f"{type(cmd).__name__} {mid} by {agent} ({which} claim)")

    @precondition(lambda self: bool(self.model.msgs))
    @rule(data=st.data(), which=st.sampled_from(["none", "current", "old"]))
    def ack(self, data: st.DataObject, which: str) -> None:
        self._holder_rule(data, which, c.AckMessage)

    @precondition(lambda self: bool(self.model.msgs))
    @rule(data=st.data(), which=st.sampled_from(["none", "current", "old"]))
    def release(self, data: st.DataObject, which: str) -> None:
        self._holder_rule(data, which, c.ReleaseMessage)

    @precondition(lambda self: bool(self.model.msgs))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        mid = self._pick(data)
        m = self.model.msgs[mid]
        cmd = c.DeleteMessage(mid, "operator", self.now)
        if m.status == "deleted":
            self._expect(cmd, ConflictError)
            return
        self._expect(cmd, None)
        m.status, m.claim = "deleted", None

    @rule(ms=st.sampled_from([0, 1, 499, 500, 501, 1_000, 2_500]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @precondition(lambda self: any(m.status == "claimed" for m in self.model.msgs.values()))
    @rule(data=st.data(), delta=st.sampled_from([-1, 0, 1]))
    def advance_to_lease_end(self, data: st.DataObject, delta: int) -> None:
        """Straight to a lease's last instant (or one ms either side): where off-by-ones live."""
        ends = sorted({m.lease_until for m in self.model.msgs.values() if m.status == "claimed"})
        end = data.draw(st.sampled_from(ends), label="lease end") + delta
        if end > self.now:
            self.clock.advance(end - self.now)

    def _reap(self, judged_at: int, expired: list[c.ExpiredClaim]) -> list[str]:
        result = self._run(c.Reap(self.now, 90_000, T0, (), tuple(expired)))
        released: list[str] = result.released_message_ids
        self.released.append((self.now, released))
        for mid in released:
            m = self.model.msgs[mid]
            assert m.status == "claimed" and self.now > m.lease_until, (mid, m)
            m.old_claims.add(str(m.claim))
            m.status, m.claim = "pending", None
        note(f"reap at T0+{self.now - T0}: judged {[e.message_id for e in expired]}, released {released}")
        return released

    @rule()
    def reap(self) -> None:
        expired = expired_claims(self.rm, self.now)
        released = self._reap(self.now, expired)
        assert sorted(released) == sorted(e.message_id for e in expired), "an uncontested expiry was skipped"

    @precondition(lambda self: bool(self.model.msgs))
    @rule(data=st.data(), lease=st.sampled_from(LEASES_MS), racer=st.sampled_from(["claim", "ack", "delete"]))
    def reap_overtaken(self, data: st.DataObject, lease: int, racer: str) -> None:
        """The reaper decides; another write lands before its record: that write wins."""
        expired = expired_claims(self.rm, self.now)
        if not expired:
            return
        target = data.draw(st.sampled_from(sorted(e.message_id for e in expired)), label="raced")
        m = self.model.msgs[target]
        if racer == "claim":  # a takeover claim: records the expiry itself
            self._expect(c.ClaimMessage(target, m.recipient, f"c{next(self.ids)}", lease, self.now), None)
            m.old_claims.add(str(m.claim))
            m.status, m.claim, m.lease_until = "claimed", f"c{next(self.ids) - 1}", self.now + lease
        elif racer == "ack":  # too late: the lease is over, so it must be refused
            self._expect(c.AckMessage(target, m.recipient, None, self.now), ConflictError)
        else:
            self._expect(c.DeleteMessage(target, "operator", self.now), None)
            m.status, m.claim = "deleted", None
        released = self._reap(self.now, expired)
        if racer != "ack":
            assert target not in released, "the reaper released a claim that had moved on"

    # -- invariants ----------------------------------------------------------------------------------

    @invariant()
    def log_explains_every_message(self) -> None:
        assert not self.audit.violations, self.audit.violations

    @invariant()
    def no_message_lost(self) -> None:
        shown = self.rm.messages.by_id
        assert set(shown) == set(self.model.msgs)
        for mid, m in self.model.msgs.items():
            s = shown[mid]
            audited = self.audit.seen[Message.create_id(mid)]
            assert s["status"] == m.status == audited.status, (mid, s["status"], m.status, audited.status)
            assert s["claimId"] == m.claim, (mid, s["claimId"], m.claim)

    @invariant()
    def never_two_live_claims(self) -> None:
        live = {mid: s for mid, s in self.rm.messages.by_id.items() if s["status"] == "claimed"}
        assert sorted(self.rm.messages.claimed_ids()) == sorted(live)
        for s in live.values():
            assert s["claimedBy"] == s["recipient"]

    @invariant()
    def inbox_is_open_messages_urgent_first(self) -> None:
        for aid in AGENTS:
            inbox = self.rm.messages.inbox(aid)
            expected = [
                mid
                for mid, m in self.model.msgs.items()
                if m.recipient == aid and m.status in ("pending", "claimed")
            ]
            assert sorted(x["id"] for x in inbox) == sorted(expected)
            urgent = [x["priority"] == "urgent" for x in inbox]
            assert urgent == sorted(urgent, reverse=True)
            seqs = [[x["seq"] for x in inbox if (x["priority"] == "urgent") == u] for u in (True, False)]
            assert all(s == sorted(s) for s in seqs)

    @invariant()
    def replay_and_checkpoint_equal_live(self) -> None:
        rebuilt = ReadModels()
        for n in self.app.recorder.select_notifications(start=1, limit=1_000_000):
            rebuilt.apply(n.id, self.app.mapper.to_domain_event(n))
        assert rebuilt.comparable() == self.rm.comparable()
        assert ReadModels.from_state(self.rm.to_state()).comparable() == self.rm.comparable()


def test_messages_state_machine() -> None:
    run_state_machine_as_test(MessagesMachine)
