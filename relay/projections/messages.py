"""The messages read model: every message, each agent's open inbox, and live claims.

Folded from the Message events by ``ReadModels.apply``'s dispatch (the
handlers below take the ReadModels, so a message's aggregate is named in
``rm.entities`` like every other entity and the raw log can say whose event it
is). Messages are wire-shaped dicts kept in send order; ``seq`` is the log
position of a message's ``MessageSent``, so "oldest first" and paging need
no clock. Indexes (open messages per recipient, claimed messages) are derived
and rebuilt from the messages on a checkpoint load, so a checkpoint only
holds the messages themselves.

A broadcast's content (``BroadcastSent``) is kept once, in ``broadcasts``;
each copy (``MessageDelivered``) is a message dict whose content fields are
the very same objects, so a body is held in memory once, and a checkpoint
writes it once (``to_state`` leaves the shared fields out of each copy).
Copies from logs written before ADR 0014 (full ``MessageSent`` each) read the
same, and are checkpointed whole, as before.

Also here, because the HTTP edge, the reaper and the property tests all need
the same answer: who a ``to`` reaches (``recipients``) and which claims have
run out (``expired_claims``). The stream's ``?agent=<id>`` scope (relay.http.sse)
keys message changes on their ``recipient`` and ``from``.
"""

from __future__ import annotations

import bisect
from typing import Any

from relay import commands as c
from relay.domain.message import ACKED, CLAIMED, DELETED, PENDING, Message
from relay.domain.rules import BROADCAST_ALL, LABEL_PREFIX, TAG_PREFIX, is_broadcast
from relay.projections.fold import Change
from relay.projections.fold import FoldTarget as ReadModels  # not readmodels: it imports us (ADR 0028)


class Messages:
    """All messages in send order, with the indexes the inbox and the reaper need."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        # Parallel, in seq order: bisect on seqs for paging.
        self._order: list[str] = []
        self._seqs: list[int] = []
        # recipient -> ordered set of its pending or claimed message ids.
        self._open: dict[str, dict[str, None]] = {}
        # message ids currently claimed (the reaper's candidates come from here).
        self._claimed: dict[str, None] = {}
        # broadcast id -> its content, shared by every copy that names it (ADR 0014).
        self.broadcasts: dict[str, dict[str, Any]] = {}
        # ids of copies whose content lives in ``broadcasts``.
        self._shared: dict[str, None] = {}
        # broadcast id -> how many of its copies are still here: its content leaves with
        # the last one forgotten (ADR 0036).
        self._copies: dict[str, int] = {}
        # message id -> when it settled (acked or deleted): what keep-settled forgets
        # (ADR 0036) without scanning every message. Derived, rebuilt on a checkpoint load.
        self.settled: dict[str, int] = {}
        # ids in ``_order`` forgotten since it was last compacted.
        self._dead = 0

    # -- folding -------------------------------------------------------------------

    def _index(self, m: dict[str, Any]) -> None:
        mid = m["id"]
        self.by_id[mid] = m
        self._order.append(mid)
        self._seqs.append(m["seq"])
        if m["status"] in (PENDING, CLAIMED):
            self._open.setdefault(m["recipient"], {})[mid] = None
        if m["status"] == CLAIMED:
            self._claimed[mid] = None

    def _share(self, mid: str, broadcast_id: str) -> None:
        self._shared[mid] = None
        self._copies[broadcast_id] = self._copies.get(broadcast_id, 0) + 1

    def _settle(self, m: dict[str, Any], at: int) -> None:
        self.settled[m["id"]] = max(at, self.settled.get(m["id"], at))

    def forget(self, mid: str) -> None:
        """A settled message leaves the read model (ADR 0036); the log keeps it.

        ``_order`` keeps its id until more than half of it is forgotten, then
        it is compacted in one pass, so forgetting costs O(1) amortised.
        """
        m = self.by_id.pop(mid, None)
        if m is None:
            return
        self._close(m)
        self.settled.pop(mid, None)
        if mid in self._shared:
            del self._shared[mid]
            bid = m["broadcastId"]
            left = self._copies.get(bid, 1) - 1
            if left > 0:
                self._copies[bid] = left
            else:
                self._copies.pop(bid, None)
                self.broadcasts.pop(bid, None)
        self._dead += 1
        if self._dead * 2 > len(self._order):
            keep = [i for i, x in enumerate(self._order) if x in self.by_id]
            self._order = [self._order[i] for i in keep]
            self._seqs = [self._seqs[i] for i in keep]
            self._dead = 0

    def _close(self, m: dict[str, Any]) -> None:
        inbox = self._open.get(m["recipient"])
        if inbox is not None:
            inbox.pop(m["id"], None)
            if not inbox:
                del self._open[m["recipient"]]
        self._claimed.pop(m["id"], None)

    # -- queries -------------------------------------------------------------------

    def inbox(self, agent_id: str) -> list[dict[str, Any]]:
        """Pending and claimed-by-``agent_id`` messages: urgent first, then oldest."""
        ids = self._open.get(agent_id, {})
        out = []
        for mid in ids:
            m = self.by_id[mid]
            if m["status"] == PENDING or m["claimedBy"] == agent_id:
                out.append(m)
        out.sort(key=lambda m: m["priority"] != "urgent")  # stable: oldest first within each
        return out

    def query(
        self,
        to: str | None = None,
        sender: str | None = None,
        status: str | None = None,
        message_type: str | None = None,
        broadcast_id: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Messages with ``seq > after`` matching every filter given, oldest first.

        Returns the page and the ``after`` for the next page (None at the end).
        ``to`` matches the recipient or the target as sent (``*``, ``tag:X``...).
        """
        out: list[dict[str, Any]] = []
        start = bisect.bisect_right(self._seqs, after)
        for i in range(start, len(self._order)):
            m = self.by_id.get(self._order[i])
            if m is None:
                continue  # forgotten (ADR 0036)
            if to is not None and m["recipient"] != to and m["to"] != to:
                continue
            if sender is not None and m["from"] != sender:
                continue
            if status is not None and m["status"] != status:
                continue
            if message_type is not None and m["type"] != message_type:
                continue
            if broadcast_id is not None and m["broadcastId"] != broadcast_id:
                continue
            if len(out) == limit:
                return out, out[-1]["seq"]
            out.append(m)
        return out, None

    def all(self) -> list[dict[str, Any]]:
        """Every message as the API shows it, in send order."""
        return list(self.by_id.values())

    def claimed_ids(self) -> list[str]:
        return list(self._claimed)

    def counts(self) -> dict[str, int]:
        """How many messages are in each status (for health and tests)."""
        out = {s: 0 for s in (PENDING, CLAIMED, ACKED, DELETED)}
        for m in self.by_id.values():
            out[m["status"]] += 1
        return out

    # -- checkpoints -------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Broadcasts' content once, then the messages in send order (a copy without the
        content it shares); every index is derived from them."""
        shared = self._shared
        return {
            "broadcasts": self.broadcasts,
            "messages": [
                {k: v for k, v in m.items() if k not in SHARED_FIELDS} if m["id"] in shared else m
                for m in self.by_id.values()
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any] | list[dict[str, Any]]) -> Messages:
        """The inverse of ``to_state``; also reads the list written before ADR 0014."""
        ms = cls()
        if isinstance(state, list):
            state = {"broadcasts": {}, "messages": state}
        ms.broadcasts = state["broadcasts"]
        for m in state["messages"]:
            if "body" not in m:  # a copy: its content is its broadcast's
                m.update(ms.broadcasts[m["broadcastId"]]["content"])
                ms._share(m["id"], m["broadcastId"])
            ms._index(m)
            if m["status"] in (ACKED, DELETED):
                ms.settled[m["id"]] = max(m["ackedAt"] or 0, m["deletedAt"] or 0)
        return ms


# -- the fold, dispatched from ReadModels.apply ----------------------------------------------


def _message(rm: ReadModels, ev: Any) -> dict[str, Any]:
    return rm.messages.by_id[rm._entity(ev)[1]]


def _content(sender: str, to: str, message_type: str, subject: str | None, body: str,
             meta: dict[str, Any], at: int) -> dict[str, Any]:
    """What every copy of a message shows the same: who, to what, what, when."""
    return {
        "from": sender,
        "to": to,
        "type": message_type,
        "subject": subject,
        "body": body,
        "meta": meta,
        "priority": "urgent" if meta.get("priority") == "urgent" else "normal",
        "createdAt": at,
    }


# The fields a broadcast's copies share (left out of each copy in a checkpoint).
SHARED_FIELDS = frozenset(_content("", "", "", None, "", {}, 0))


def _new_message(
    rm: ReadModels, message_id: str, recipient: str, broadcast_id: str | None, content: dict[str, Any]
) -> dict[str, Any]:
    m: dict[str, Any] = {
        "id": message_id,
        "seq": rm.position_applying,
        **content,
        "recipient": recipient,
        "broadcastId": broadcast_id,
        "status": PENDING,
        "claimId": None,
        "claimedBy": None,
        "claimedAt": None,
        "leaseUntil": None,
        "claims": 0,
        "lastRelease": None,
        "ackedAt": None,
        "ackedBy": None,
        "deletedAt": None,
        "deletedBy": None,
    }
    rm.messages._index(m)
    return m


def _sent(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    rm._named(ev, "message", ev.message_id)
    content = _content(ev.sender, ev.to, ev.message_type, ev.subject, ev.body, ev.meta, ev.at)
    m = _new_message(rm, ev.message_id, ev.recipient, ev.broadcast_id, content)
    if changes is not None:
        changes.append(("message.new", m))


def _broadcast_sent(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    rm._named(ev, "broadcast", ev.broadcast_id)
    rm.messages.broadcasts[ev.broadcast_id] = {
        "recipientCount": ev.recipient_count,
        "content": _content(ev.sender, ev.to, ev.message_type, ev.subject, ev.body, ev.meta, ev.at),
    }


def _delivered(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    rm._named(ev, "message", ev.message_id)
    content = rm.messages.broadcasts[ev.broadcast_id]["content"]
    m = _new_message(rm, ev.message_id, ev.recipient, ev.broadcast_id, content)
    rm.messages._share(ev.message_id, ev.broadcast_id)
    if changes is not None:
        changes.append(("message.new", m))


def _claimed(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    m = _message(rm, ev)
    m["status"] = CLAIMED
    m["claimId"] = ev.claim_id
    m["claimedBy"] = ev.agent_id
    m["claimedAt"] = ev.at
    m["leaseUntil"] = ev.lease_until
    m["claims"] += 1
    rm.messages._claimed[m["id"]] = None
    if changes is not None:
        changes.append(("message.claimed", m))


def _unclaimed(rm: ReadModels, ev: Any, reason: str, changes: list[Change] | None) -> None:
    m = _message(rm, ev)
    m["status"] = PENDING
    m["lastRelease"] = {
        "reason": reason,
        "claimId": ev.claim_id,
        "agentId": ev.agent_id,
        "at": ev.at,
    }
    m["claimId"] = None
    m["claimedBy"] = None
    m["claimedAt"] = None
    m["leaseUntil"] = None
    rm.messages._claimed.pop(m["id"], None)
    if changes is not None:
        changes.append(("message.claim_released", m))


def _claim_released(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    _unclaimed(rm, ev, "released", changes)


def _claim_expired(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    _unclaimed(rm, ev, "expired", changes)


def _acked(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    m = _message(rm, ev)
    m["status"] = ACKED
    m["ackedAt"] = ev.at
    m["ackedBy"] = ev.agent_id
    rm.messages._close(m)
    rm.messages._settle(m, ev.at)
    if changes is not None:
        changes.append(("message.acked", m))


def _deleted(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    m = _message(rm, ev)
    m["status"] = DELETED
    m["deletedAt"] = ev.at
    m["deletedBy"] = ev.requested_by
    m["claimId"] = None
    m["claimedBy"] = None
    m["claimedAt"] = None
    m["leaseUntil"] = None
    rm.messages._close(m)
    rm.messages._settle(m, ev.at)
    if changes is not None:
        changes.append(("message.deleted", m))


def _forgotten(rm: ReadModels, ev: Any, changes: list[Change] | None) -> None:
    """Settled longer than keep-settled: out of the read model, still in the log (ADR 0036)."""
    rm.messages.forget(rm._entity(ev)[1])


HANDLERS: dict[str, Any] = {
    "MessageSent": _sent,
    "BroadcastSent": _broadcast_sent,
    "MessageDelivered": _delivered,
    "MessageClaimed": _claimed,
    "MessageClaimReleased": _claim_released,
    "MessageClaimExpired": _claim_expired,
    "MessageAcked": _acked,
    "MessageDeleted": _deleted,
    "MessageForgotten": _forgotten,
}


def settled_to_forget(
    rm: ReadModels, now: int, keep_ms: int, limit: int = 2_000
) -> c.ForgetSettled | None:
    """What keep-settled forgets at ``now``: commands and messages settled at least
    ``keep_ms`` ago, as the read model shows them (ADR 0036); None when nothing is due.

    Pure (no clock, no IO), like ``expired_claims``: the service's reaper pass and the
    property tests run the same decision; each aggregate re-checks before recording.
    At most ``limit`` of each per pass, so one transaction stays small; the next
    pass takes the rest.
    """
    upto = now - keep_ms
    by_orchestrator: dict[str, list[str]] = {}
    n = 0
    for cid, at in rm.settled_commands.items():
        if at <= upto and n < limit:
            by_orchestrator.setdefault(rm.commands[cid]["orchestratorId"], []).append(cid)
            n += 1
    mids = [mid for mid, at in rm.messages.settled.items() if at <= upto][:limit]
    if not by_orchestrator and not mids:
        return None
    return c.ForgetSettled(
        now=now,
        commands=tuple((oid, tuple(cids)) for oid, cids in sorted(by_orchestrator.items())),
        message_ids=tuple(mids),
    )


# -- decisions shared by the edge, the reaper and the stream ---------------------------------


def recipients(rm: ReadModels, to: str, sender: str) -> list[str]:
    """The agents ``to`` reaches, by id; a broadcast never reaches its own sender.

    Offline agents are included: messages are durable and wait in the inbox.
    A direct ``to`` is returned as is (the application checks it exists).
    """
    if not is_broadcast(to):
        return [to]
    if to == BROADCAST_ALL:
        found = [a["id"] for a in rm.agents.values()]
    elif to.startswith(LABEL_PREFIX):
        label = to[len(LABEL_PREFIX) :]
        found = [a["id"] for a in rm.agents.values() if a["label"] == label]
    else:
        tag = to[len(TAG_PREFIX) :]
        found = [a["id"] for a in rm.agents.values() if tag in a["tags"]]
    return sorted(aid for aid in found if aid != sender)


def expired_claims(rm: ReadModels, now: int) -> list[c.ExpiredClaim]:
    """Claims whose lease is over at ``now`` (strictly after ``leaseUntil``), as the read
    model shows them, with the version each was judged at.

    Pure (no clock, no IO) so the service and the property tests run the very
    same decision; the aggregate re-checks before anything is recorded.
    """
    out: list[c.ExpiredClaim] = []
    for mid in rm.messages.claimed_ids():
        m = rm.messages.by_id[mid]
        if m["status"] == CLAIMED and now > m["leaseUntil"]:
            entity = rm.entities.get(Message.create_id(mid).hex)
            if entity is not None:
                out.append(c.ExpiredClaim(mid, m["claimId"], entity[2]))
    return out

