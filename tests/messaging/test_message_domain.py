"""The Message aggregate's rules: no IO, no clock; build, command, assert events and state."""

from __future__ import annotations

import pytest

from relay.domain.errors import ConflictError
from relay.domain.message import Message, broadcast_copy_id


def make(recipient: str = "a2") -> Message:
    return Message(
        message_id="m1",
        sender="a1",
        to=recipient,
        recipient=recipient,
        message_type="message",
        subject=None,
        body="hi",
        meta={},
        broadcast_id=None,
        at=1_000,
    )


def topics(m: Message) -> list[str]:
    return [type(e).TOPIC for e in m.collect_events()]  # type: ignore[attr-defined]


def test_claim_ack_records_past_tense_facts_with_explicit_topics() -> None:
    m = make()
    m.claim("a2", "c1", lease_ms=500, at=1_100)
    m.ack("a2", "c1", at=1_600)  # the last instant of the lease still counts
    assert topics(m) == ["MessageSent", "MessageClaimed", "MessageAcked"]
    assert m.status == "acked"


def test_only_the_recipient_may_claim() -> None:
    m = make()
    with pytest.raises(ConflictError, match="only 'a2' may claim"):
        m.claim("a3", "c1", 500, 1_100)
    assert topics(m) == ["MessageSent"]


def test_a_live_claim_excludes_every_other_claim() -> None:
    m = make()
    m.claim("a2", "c1", 500, 1_100)
    with pytest.raises(ConflictError, match="already claimed"):
        m.claim("a2", "c2", 500, 1_600)  # at leaseUntil: still held
    assert m.claim_id == "c1"


def test_a_claim_after_the_lease_records_the_expiry_once_then_claims() -> None:
    m = make()
    m.claim("a2", "c1", 500, 1_100)
    m.claim("a2", "c2", 500, 1_601)
    assert topics(m) == ["MessageSent", "MessageClaimed", "MessageClaimExpired", "MessageClaimed"]
    assert (m.claim_id, m.lease_until) == ("c2", 2_101)
    # the reaper judged the old claim: nothing more is recorded for it
    assert not m.expire(now=5_000, judged_claim_id="c1")


def test_ack_after_the_lease_or_under_an_old_claim_is_a_conflict() -> None:
    m = make()
    m.claim("a2", "c1", 500, 1_100)
    with pytest.raises(ConflictError, match="ended"):
        m.ack("a2", "c1", 1_601)
    m.claim("a2", "c2", 500, 1_700)
    with pytest.raises(ConflictError, match="under that claim"):
        m.ack("a2", "c1", 1_800)
    m.ack("a2", None, 1_800)  # without a claim id: the agent's current claim
    with pytest.raises(ConflictError, match="already acked"):
        m.ack("a2", "c2", 1_900)


def test_release_needs_the_claim_and_returns_it_to_pending() -> None:
    m = make()
    with pytest.raises(ConflictError, match="not claimed"):
        m.release("a2", None, 1_100)
    m.claim("a2", "c1", 500, 1_100)
    m.release("a2", "c1", 1_200)
    assert (m.status, m.claim_id, m.claimed_by, m.lease_until) == ("pending", None, None, None)


def test_expire_only_the_judged_claim_and_only_after_the_lease() -> None:
    m = make()
    m.claim("a2", "c1", 500, 1_100)
    assert not m.expire(now=1_600, judged_claim_id="c1")  # the lease holds through 1_600
    assert not m.expire(now=1_601, judged_claim_id="other")
    assert m.expire(now=1_601, judged_claim_id="c1")
    assert not m.expire(now=1_602, judged_claim_id="c1")  # exactly once
    assert topics(m) == ["MessageSent", "MessageClaimed", "MessageClaimExpired"]


def test_delete_is_terminal_and_ends_a_claim() -> None:
    m = make()
    m.claim("a2", "c1", 500, 1_100)
    m.delete("operator", 1_200)
    assert m.status == "deleted" and m.claim_id is None
    for act in (
        lambda: m.claim("a2", "c2", 500, 1_300),
        lambda: m.ack("a2", "c1", 1_300),
        lambda: m.release("a2", "c1", 1_300),
        lambda: m.delete("operator", 1_300),
    ):
        with pytest.raises(ConflictError, match="deleted"):
            act()
    assert not m.expire(now=9_999, judged_claim_id="c1")


def test_replaying_the_events_rebuilds_the_same_state() -> None:
    m = make()
    m.claim("a2", "c1", 500, 1_100)
    m.claim("a2", "c2", 500, 2_000)
    m.release("a2", "c2", 2_100)
    m.claim("a2", "c3", 500, 2_200)
    events = m.collect_events()  # type: ignore[attr-defined]
    copy = None
    for e in events:
        copy = e.mutate(copy)
    assert copy is not None
    assert (copy.status, copy.claim_id, copy.lease_until, copy.version) == (
        m.status, m.claim_id, m.lease_until, m.version
    )


def test_broadcast_copy_ids_are_derived_and_distinct() -> None:
    assert broadcast_copy_id("b", "a1") == broadcast_copy_id("b", "a1")
    assert broadcast_copy_id("b", "a1") != broadcast_copy_id("b", "a2")
    assert Message.create_id("m1") == make().id
