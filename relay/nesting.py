"""One nesting limit for JSON, from the HTTP edge to every writer and reader.

orjson reads 1,024 levels but writes at most 255, so a value nested between
the two can be accepted, stored and then never shown again: every reader that
wraps it in a few more levels (an SSE frame, a log page, a checkpoint) fails.
One number decides it (ADR 0011): a request's field nests at most
``MAX_DEPTH`` levels; a stored event, which wraps fields in a few envelope
levels of its own, at most ``STORED_MAX_DEPTH``. The edge refuses deeper
bodies, the transcoder refuses to write deeper events, and it shows a deeper
event written before the limit with its too-deep parts replaced, so a reader
never meets anything orjson cannot write back.

Depth counts containers: ``{}`` and ``[]`` are 1 deep, ``{"a": []}`` 2, a
scalar 0. Walks are iterative (a body may be 1,024 deep) and stop one level
past the limit; callers skip them entirely when the bytes hold too few
brackets to reach it (``bytes.count`` runs in C: a heartbeat pays ~100 ns).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32  # levels a request's field may nest (meta and every other free-form value)
ENVELOPE_DEPTH = 8  # levels an event or snapshot may add around a field
STORED_MAX_DEPTH = MAX_DEPTH + ENVELOPE_DEPTH
INT_MIN = -(2**63)  # what orjson reads as an integer; beyond, it silently makes a float
INT_MAX = 2**64 - 1
TOO_DEEP = f"(nested deeper than {STORED_MAX_DEPTH} levels: not shown)"

_CONTAINERS = (dict, list, tuple)


def brackets(data: bytes) -> int:
    """An upper bound on the nesting depth of the JSON text ``data`` (C speed)."""
    return data.count(b"{") + data.count(b"[")


def depth(value: Any, stop: int) -> int:
    """``value``'s nesting depth, or any number above ``stop`` once it passes ``stop``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if not isinstance(v, _CONTAINERS):
            continue
        if d > deepest:
            deepest = d
            if d > stop:
                return d
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, d + 1) for c in children if isinstance(c, _CONTAINERS))
    return deepest


def clip(value: Any, limit: int) -> tuple[Any, bool]:
    """``value`` with every container deeper than ``limit`` replaced by ``TOO_DEEP``.

    Returns the value and whether anything was replaced. Containers are changed
    in place (a freshly decoded value is ours alone).
    """
    if not isinstance(value, dict | list):  # decoded JSON: no tuples
        return value, False
    if limit < 1:
        return TOO_DEEP, True
    clipped = False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        for k in list(v.keys()) if isinstance(v, dict) else range(len(v)):
            c = v[k]
            if isinstance(c, dict | list):
                if d + 1 > limit:
                    v[k] = TOO_DEEP
                    clipped = True
                else:
                    stack.append((c, d + 1))
    return value, clipped


def too_deep_field(body: dict[str, Any], limit: int = MAX_DEPTH) -> str | None:
    """The first top-level field of ``body`` nested deeper than ``limit``, or None."""
    for key, v in body.items():
        if isinstance(v, _CONTAINERS) and depth(v, limit) > limit:
            return str(key)
    return None


class Huge:
    """An integer literal too long to convert (Python refuses past 4,300 digits)."""

    __slots__ = ()


def parse_int(text: str) -> int | Huge:
    """``json.loads``'s ``parse_int`` that never raises on a very long literal."""
    return int(text) if len(text) <= 40 else Huge()


def big_int_path(value: Any, path: str = "") -> str | None:
    """Where ``value`` (parsed with ``parse_int``) holds an integer beyond 64 bits, or None."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        v, where = stack.pop()
        if isinstance(v, Huge) or (
            isinstance(v, int) and not isinstance(v, bool) and not INT_MIN <= v <= INT_MAX
        ):
            return where or "body"
        if isinstance(v, dict):
            stack.extend(
                (c, f"{where}.{k}" if where else str(k)) for k, c in reversed(list(v.items()))
            )
        elif isinstance(v, list):
            stack.extend((c, f"{where}[{i}]") for i, c in reversed(list(enumerate(v))))
    return None
