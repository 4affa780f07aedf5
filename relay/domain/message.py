"""The message aggregate: one delivery to one agent's inbox, with claims and leases.

A broadcast (``*``, ``tag:X``, ``label:X``) becomes one Message per recipient,
all sharing a ``broadcast_id`` (ADR 0010), so every rule here is about one
recipient's copy. Since ADR 0014 the content of a broadcast is stored once,
in a ``Broadcast`` (``BroadcastSent``), and each copy starts with a small
``MessageDelivered`` naming it; logs written before that hold one full
``MessageSent`` per copy, and both read the same.

Lifecycle::

    pending ──claim──▶ claimed ──ack──▶ acked
       ▲                  │
       └──release/expiry──┘            (any state but deleted) ──delete──▶ deleted

Only the recipient may claim. A claim lasts until ``lease_until`` (inclusive);
after that it no longer counts as held: an ack or release is refused, and
the claim is recorded as expired exactly once, by the reaper or by the next
claim, whichever comes first. Time is always passed in as ``at``/``now``.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from relay.domain.errors import ConflictError, TooLargeError

PENDING = "pending"
CLAIMED = "claimed"
ACKED = "acked"
DELETED = "deleted"
STATUSES: tuple[str, ...] = (PENDING, CLAIMED, ACKED, DELETED)
MESSAGE_TYPES: tuple[str, ...] = ("message", "system")
PRIORITIES: tuple[str, ...] = ("normal", "urgent")
MAX_LEASE_SECONDS = 86_400
# Recipients times content bytes a broadcast may reach. The log stores the content once, but
# every inbox, list page and stream frame still carries each copy's body (ADR 0014).
MAX_FANOUT_BYTES = 16 * 1024 * 1024


class Message(Aggregate):
    """One message in one agent's inbox."""

    TOPIC = "Message"

    class Event(Aggregate.Event):
        TOPIC = "MessageEvent"

    @staticmethod
    def create_id(message_id: str, **_: Any) -> UUID:
        """Derived from the message id, so no lookup index is needed."""
        return uuid5(NAMESPACE_URL, "relay:message:" + message_id)

    class Delivered(Aggregate.Created, Event):
        """A broadcast's copy reached one recipient's inbox; the content is the Broadcast's."""

        TOPIC = "MessageDelivered"
        class_version = 1
        message_id: str
        recipient: str
        broadcast_id: str
        at: int

    # The content parameters have defaults only for ``Delivered``, which names the
    # Broadcast that holds them; ``Sent`` always records every one of them.
    class Sent(Aggregate.Created, Event):
        """A message reached one inbox with its content (direct, or a broadcast's copy before ADR 0014)."""

        TOPIC = "MessageSent"
        class_version = 1
        message_id: str
        sender: str
        to: str
        recipient: str
        message_type: str
        subject: str | None
        body: str
        meta: dict[str, Any] | None
        broadcast_id: str | None
        at: int

    @event(Sent)
    def __init__(
        self,
        message_id: str,
        sender: str = "",
        to: str = "",
        recipient: str = "",
        message_type: str = "message",
        subject: str | None = None,
        body: str = "",
        meta: dict[str, Any] | None = None,
        broadcast_id: str | None = None,
        at: int = 0,
    ) -> None:
        self.message_id = message_id
        self.sender = sender
        self.to = to
        self.recipient = recipient
        self.message_type = message_type
        self.created_at = at
        self.status = PENDING
        self.claim_id: str | None = None
        self.claimed_by: str | None = None
        self.lease_until: int | None = None
        self.broadcast_id = broadcast_id

    @classmethod
    def deliver(cls, message_id: str, recipient: str, broadcast_id: str, at: int) -> Message:
        """One recipient's copy of a broadcast: its own claims and acks, the content by reference."""
        return cls._create(
            cls.Delivered, message_id=message_id, recipient=recipient, broadcast_id=broadcast_id, at=at
        )

    # -- rules -------------------------------------------------------------------

    def _refuse_if_closed(self) -> None:
        if self.status == DELETED:
            raise ConflictError(f"message {self.message_id!r} was deleted")
        if self.status == ACKED:
            raise ConflictError(f"message {self.message_id!r} is already acked")

    def holds(self, agent_id: str, claim_id: str | None, at: int) -> bool:
        """Whether ``agent_id`` (with ``claim_id``, when given) holds a live claim at ``at``."""
        return (
            self.status == CLAIMED
            and self.claimed_by == agent_id
            and (claim_id is None or claim_id == self.claim_id)
            and self.lease_until is not None
            and at <= self.lease_until
        )

    def lease_ended(self, now: int) -> bool:
        """Claimed, and the lease is over at ``now`` (strictly after ``lease_until``)."""
        return self.status == CLAIMED and self.lease_until is not None and now > self.lease_until

    def _require_holder(self, agent_id: str, claim_id: str | None, at: int, verb: str) -> None:
        self._refuse_if_closed()
        if self.status != CLAIMED:
            raise ConflictError(
                f"message {self.message_id!r} is not claimed; claim it before you {verb} it"
            )
        if self.claimed_by != agent_id or (claim_id is not None and claim_id != self.claim_id):
            raise ConflictError(
                f"message {self.message_id!r} is not held by {agent_id!r} under that claim "
                f"(it is claimed by {self.claimed_by!r}); claim it again before you {verb} it"
            )
        if self.lease_ended(at):
            raise ConflictError(
                f"the claim of {agent_id!r} on message {self.message_id!r} ended at "
                f"{self.lease_until}; claim it again before you {verb} it"
            )

    # -- use cases -----------------------------------------------------------------

    def claim(self, agent_id: str, claim_id: str, lease_ms: int, at: int) -> None:
        """Exclusive delivery to the recipient until ``at + lease_ms``.

        A claim whose lease has ended is recorded as expired first (so it is
        released exactly once even when the reaper has not come by yet).
        """
        self._refuse_if_closed()
        if agent_id != self.recipient:
            raise ConflictError(
                f"message {self.message_id!r} is in {self.recipient!r}'s inbox; "
                f"only {self.recipient!r} may claim it, not {agent_id!r}"
            )
        if self.status == CLAIMED:
            assert self.lease_until is not None
            if not self.lease_ended(at):
                raise ConflictError(
                    f"message {self.message_id!r} is already claimed by {self.claimed_by!r} "
                    f"until {self.lease_until}"
                )
            self._claim_expired(
                claim_id=self.claim_id, agent_id=self.claimed_by, lease_until=self.lease_until, at=at
            )
        self._claimed(claim_id=claim_id, agent_id=agent_id, lease_until=at + lease_ms, at=at)

    class Claimed(Event):
        """The recipient holds the message until ``lease_until`` (inclusive)."""

        TOPIC = "MessageClaimed"
        class_version = 1
        claim_id: str
        agent_id: str
        lease_until: int
        at: int

    @event(Claimed)
    def _claimed(self, claim_id: str, agent_id: str, lease_until: int, at: int) -> None:
        self.status = CLAIMED
        self.claim_id = claim_id
        self.claimed_by = agent_id
        self.lease_until = lease_until

    def ack(self, agent_id: str, claim_id: str | None, at: int) -> None:
        """Complete the delivery; only the holder of a live claim may."""
        self._require_holder(agent_id, claim_id, at, "ack")
        self._acked(claim_id=self.claim_id, agent_id=agent_id, at=at)

    class Acked(Event):
        """The delivery is complete (by its holder, or settled with its command's result)."""

        TOPIC = "MessageAcked"
        class_version = 1
        claim_id: str | None
        agent_id: str
        at: int

    @event(Acked)
    def _acked(self, claim_id: str, agent_id: str, at: int) -> None:
        self.status = ACKED

    def settle(self, at: int) -> bool:
        """The command this control message carries has its result: the message is done.

        Recorded as an ack by the recipient (the orchestrator posted the
        result), so control messages do not pile up in inboxes; a message
        already acked or deleted is left as it is.
        """
        if self.status not in (PENDING, CLAIMED):
            return False
        self._acked(claim_id=self.claim_id, agent_id=self.recipient, at=at)
        return True

    # Set by ``Forgotten`` only; a class default, so every earlier log replays unchanged.
    forgotten = False

    def forget(self, at: int) -> bool:
        """Let a settled (acked or deleted) message leave memory (ADR 0036).

        False, and nothing recorded, for an open message (pending, claimed) or
        one already forgotten: forgetting never takes a message out of an inbox.
        """
        if self.status not in (ACKED, DELETED) or self.forgotten:
            return False
        self._forgotten(at=at)
        return True

    class Forgotten(Event):
        """Settled for longer than keep-settled, the message left memory; the log keeps it."""

        TOPIC = "MessageForgotten"
        class_version = 1
        at: int

    @event(Forgotten)
    def _forgotten(self, at: int) -> None:
        self.forgotten = True

    def release(self, agent_id: str, claim_id: str | None, at: int) -> None:
        """Give the message back to the inbox; only the holder of a live claim may."""
        self._require_holder(agent_id, claim_id, at, "release")
        self._claim_released(claim_id=self.claim_id, agent_id=agent_id, at=at)

    class ClaimReleased(Event):
        """The holder gave the message back to the inbox."""

        TOPIC = "MessageClaimReleased"
        class_version = 1
        claim_id: str | None
        agent_id: str
        at: int

    @event(ClaimReleased)
    def _claim_released(self, claim_id: str, agent_id: str, at: int) -> None:
        self._unclaimed()

    def expire(self, now: int, judged_claim_id: str) -> bool:
        """The reaper's release: only the claim it judged, and only once its lease is over.

        An ack, release or new claim that committed after the reaper decided
        changed the claim, and then nothing is recorded.
        """
        if self.claim_id != judged_claim_id or not self.lease_ended(now):
            return False
        assert self.lease_until is not None
        self._claim_expired(
            claim_id=self.claim_id, agent_id=self.claimed_by, lease_until=self.lease_until, at=now
        )
        return True

    class ClaimExpired(Event):
        """A claim's lease ran out; the message is back in the inbox."""

        TOPIC = "MessageClaimExpired"
        class_version = 1
        claim_id: str | None
        agent_id: str | None
        lease_until: int
        at: int

    @event(ClaimExpired)
    def _claim_expired(self, claim_id: str, agent_id: str, lease_until: int, at: int) -> None:
        self._unclaimed()

    def _unclaimed(self) -> None:
        self.status = PENDING
        self.claim_id = None
        self.claimed_by = None
        self.lease_until = None

    def delete(self, requested_by: str, at: int) -> None:
        """Take it out of every inbox for good; the log keeps what happened to it."""
        if self.status == DELETED:
            raise ConflictError(f"message {self.message_id!r} was already deleted")
        self._deleted(requested_by=requested_by, at=at)

    class Deleted(Event):
        """The message left every inbox for good."""

        TOPIC = "MessageDeleted"
        class_version = 1
        requested_by: str
        at: int

    @event(Deleted)
    def _deleted(self, requested_by: str, at: int) -> None:
        self.status = DELETED
        self.claim_id = None
        self.claimed_by = None
        self.lease_until = None


def broadcast_copy_id(broadcast_id: str, recipient: str) -> str:
    """The id of one recipient's copy of a broadcast: derived, so a retry finds the same copy."""
    return str(uuid5(NAMESPACE_URL, f"relay:broadcast:{broadcast_id}:{recipient}"))


class Broadcast(Aggregate):
    """A broadcast's content, stored once for all its recipients (ADR 0014).

    Immutable once sent: each recipient's copy (a ``Message`` started by
    ``MessageDelivered``) carries the claims, acks and deletes.
    """

    TOPIC = "Broadcast"

    class Event(Aggregate.Event):
        TOPIC = "BroadcastEvent"

    @staticmethod
    def create_id(broadcast_id: str, **_: Any) -> UUID:
        return uuid5(NAMESPACE_URL, "relay:broadcast:" + broadcast_id)

    class Sent(Aggregate.Created, Event):
        """A broadcast's content, stored once for ``recipient_count`` copies (ADR 0014)."""

        TOPIC = "BroadcastSent"
        class_version = 1
        broadcast_id: str
        sender: str
        to: str
        message_type: str
        subject: str | None
        body: str
        meta: dict[str, Any]
        recipient_count: int
        at: int

    @event(Sent)
    def __init__(
        self,
        broadcast_id: str,
        sender: str,
        to: str,
        message_type: str,
        subject: str | None,
        body: str,
        meta: dict[str, Any],
        recipient_count: int,
        at: int,
    ) -> None:
        self.broadcast_id = broadcast_id
        self.recipient_count = recipient_count


def check_fanout(recipients: int, content_bytes: int, limit: int = MAX_FANOUT_BYTES) -> None:
    """Refuse a broadcast whose copies together would be over ``limit`` bytes (413)."""
    if recipients * content_bytes > limit:
        raise TooLargeError(
            f"this broadcast would put {recipients} copies of {content_bytes} bytes "
            f"({recipients * content_bytes} bytes) in inboxes, over the limit of {limit} bytes "
            "(recipients times the size of body, subject and meta); send a smaller body, or address "
            "fewer agents (a tag or label)"
        )
