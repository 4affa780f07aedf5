"""The ring on its own (relay.http.sse.ring), against a plain list of what was remembered.

The stream tests resume through the ring over HTTP; these check its bounds
directly: every position after the floor is still there, a resume gets exactly
the frames after its position up to what was delivered, and a position not
yet delivered is never dropped, whatever the bounds say.
"""

from __future__ import annotations

from hypothesis import given, note
from hypothesis import strategies as st

from relay.http.sse.encoding import Frame
from relay.http.sse.filter import Filter
from relay.http.sse.ring import Ring

EVERYTHING = Filter()


def frames(position: int, n: int) -> list[Frame]:
    return [Frame("agent", None, (f"a{k}",), b"id: %d.%d\n\n" % (position, k)) for k in range(n)]


steps = st.lists(
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.booleans()),  # gap, frames, delivered now
    min_size=1,
    max_size=60,
)


@given(steps, st.integers(1, 8), st.integers(40, 400))
def test_the_ring_keeps_what_a_resume_needs(
    plan: list[tuple[int, int, bool]], max_positions: int, max_bytes: int
) -> None:
    ring = Ring(max_positions, floor=0, max_bytes=max_bytes)
    kept: list[tuple[int, list[Frame]]] = []
    position = delivered = 0
    for gap, n, deliver in plan:
        position += gap
        fs = frames(position, n)
        ring.remember(position, fs, delivered)
        kept.append((position, fs))
        if deliver:
            delivered = position
    note(f"floor {ring.floor}, delivered {delivered}, newest {position}")
    # Never dropped before it was delivered: the floor stays below every pending position.
    assert ring.floor <= delivered or ring.floor == 0
    # Everything after the floor is there, whole.
    for p, fs in kept:
        if p > ring.floor:
            assert ring.at(p) == fs
    # A resume from anywhere at or after the floor gets exactly what follows, up to delivered.
    for start in {ring.floor, *(p for p, _ in kept if p >= ring.floor)}:
        payload, last, complete = ring.after(start, EVERYTHING, 10**9, delivered)
        want = b"".join(f.data for p, fs in kept if start < p <= delivered for f in fs)
        assert complete and payload == want and last == delivered


@given(st.integers(1, 5), st.integers(2, 30))
def test_the_bounds_hold_once_delivered(max_positions: int, n: int) -> None:
    ring = Ring(max_positions)
    for p in range(1, n + 1):
        ring.remember(p, frames(p, 1), delivered=p - 1)
    ring.remember(n + 1, frames(n + 1, 1), delivered=n)
    assert n + 1 - ring.floor <= max_positions


def test_a_small_budget_hands_over_in_steps() -> None:
    ring = Ring(100)
    for p in range(1, 6):
        ring.remember(p, frames(p, 1), delivered=p)
    payload, last, complete = ring.after(0, EVERYTHING, 1, 5)
    assert not complete and last == 1 and payload == frames(1, 1)[0].data
    payload, last, complete = ring.after(last, EVERYTHING, 10**6, 5)
    assert complete and last == 5 and payload.count(b"id: ") == 4
