"""RFC 9162 (Certificate Transparency v2) Merkle trees: roots, proofs, partial trees.

An epoch's root and the checkpoint a third party holds are RFC 9162 §2.1
Merkle Tree Hashes, so anyone with a standard CT/tlog library can check our
proofs and we can check theirs::

    MTH({})        = SHA-256()
    MTH({d0})      = SHA-256(0x00 || d0)                      leaf_hash
    MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))  node_hash
                     where k is the largest power of two smaller than n

Inclusion proofs (§2.1.3) and consistency proofs (§2.1.4) are generated as
the RFC's PATH and PROOF/SUBPROOF define them and verified with the RFC's
bit-walking algorithms (the same ones transparency-dev/merkle implements),
so a proof verified here would verify there too.

``partial_cover`` / ``root_from_partial`` serve thinning: once some leaves'
data is dropped, the tree's root can still be recomputed from the leaves that
are kept plus the *maximal* subtrees that contain no kept leaf. That set is
the minimal one (any other set of tree nodes covering the dropped leaves
without covering a kept one splits at least one of these nodes), and
``root_from_partial`` refuses a cover that overlaps a kept leaf, so a kept
event can never hide behind a subtree hash.

Everything here is pure: bytes in, bytes out, no IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import overload

_sha256 = hashlib.sha256
EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


def leaf_hash(data: bytes) -> bytes:
    """MTH of a one-leaf tree: the leaf prefix 0x00 keeps leaves and nodes apart."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node: prefix 0x01, so no leaf can pose as a node (second preimage)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class TreeBuilder:
    """Streams leaf hashes in and gives the RFC 9162 root in O(log n) memory.

    It keeps the roots of the perfect subtrees that make up the leaves so far
    (one per set bit of the count, the "compact range" of [0, n)). Merging the
    right-most of them right to left gives exactly MTH, because MTH splits at
    the largest power of two. The writer seals a million-event epoch with
    this without holding a million hashes.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Add one leaf *hash* (not data)."""
        stack = self._stack
        width, h = 1, leaf
        while stack and stack[-1][0] == width:
            h = _sha256(b"\x01" + stack.pop()[1] + h).digest()  # node_hash, inlined: a hot loop
            width *= 2
        stack.append((width, h))
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Add many leaf hashes at once: the same tree as ``append`` one by one, built faster.

        The leaves are cut into the perfect subtrees that the running size
        allows (a subtree of width k may start only where the size is a
        multiple of k, so each is exactly a node of the RFC 9162 tree), and
        each is hashed level by level in list comprehensions instead of one
        stack walk per leaf: verify spends most of its time here.
        """
        n, i = len(leaves), 0
        while i < n:
            left = n - i
            k = 1 << (left.bit_length() - 1)  # the largest power of two that fits
            if self.size:
                k = min(k, self.size & -self.size)  # and that the size is aligned to
            level = list(leaves[i : i + k])
            while len(level) > 1:
                pairs = iter(level)
                level = [_sha256(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
            self._push(k, level[0])
            i += k

    def _push(self, width: int, h: bytes) -> None:
        """Add the root of a perfect subtree of ``width`` leaves (size must be a multiple of it)."""
        stack = self._stack
        while stack and stack[-1][0] == width:
            h = _sha256(b"\x01" + stack.pop()[1] + h).digest()
            width *= 2
        stack.append((width, h))
        self.size = sum(w for w, _ in stack)

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over ``leaf_hashes`` (already leaf-hashed)."""
    b = TreeBuilder()
    for h in leaf_hashes:
        b.append(h)
    return b.root()


def _check_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for h in leaf_hashes:
        if len(h) != HASH_SIZE:
            raise ValueError("a leaf hash is not 32 bytes")


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1: the audit path for leaf ``index``."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of size {n}")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    # Walk down from the root; siblings are collected top-down, the RFC lists
    # them bottom-up, so reverse at the end.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(root(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaf_hashes[lo : lo + k]))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` put leaf hash ``leaf`` at ``index`` of ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 (empty when m is 0 or n)."""
    n = len(leaf_hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is not within a tree of size {n}")
    if old_size in (0, n):
        return []
    proof: list[bytes] = []
    lo, hi, m, whole = 0, n, old_size, True
    while True:
        if m == hi - lo:
            if not whole:
                proof.append(root(leaf_hashes[lo:hi]))
            break
        k = _split(hi - lo)
        if m <= k:
            proof.append(root(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root(leaf_hashes[lo : lo + k]))
            lo, m, whole = lo + k, m - k, False
    proof.reverse()
    return proof


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is (new_size, new_root) an append-only extension of (old_size, old_root)?"""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        # Every tree extends the empty one; there is nothing to prove.
        return not proof and old_root == EMPTY_ROOT
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class PackedHashes(Sequence[bytes]):
    """Many 32-byte hashes in one contiguous buffer, read as a sequence of ``bytes``.

    Why: thinning an epoch needs every leaf hash at once (``partial_cover``).
    Held as a list of ``bytes`` that is one small object per leaf (~65 bytes
    each, in CPython's small-object arenas), tens of MB for a big epoch; the
    writer's long-lived objects, allocated meanwhile, land in the same arenas
    and pin them, so the RSS never came back (bench/longrun.py, issue 14).
    One buffer is a single allocation (mmapped, see relay/memory.py) that goes
    back to the system as a whole when freed.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def append(self, h: bytes) -> None:
        """Add one hash; it must be HASH_SIZE bytes (the buffer has no other framing)."""
        if len(h) != HASH_SIZE:
            raise ValueError("a hash is not 32 bytes")
        self._buf += h

    def __len__(self) -> int:
        return len(self._buf) // HASH_SIZE

    def __iter__(self) -> Iterator[bytes]:
        buf = self._buf
        for lo in range(0, len(buf), HASH_SIZE):
            yield bytes(buf[lo : lo + HASH_SIZE])

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> PackedHashes: ...
    def __getitem__(self, i: int | slice) -> bytes | PackedHashes:
        n = len(self)
        if isinstance(i, slice):
            lo, hi, step = i.indices(n)
            if step != 1:
                raise ValueError("only contiguous slices of packed hashes")
            out = PackedHashes()
            out._buf = self._buf[lo * HASH_SIZE : max(lo, hi) * HASH_SIZE]
            return out  # one buffer again, not a list of small objects
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("hash index out of range")
        return bytes(self._buf[i * HASH_SIZE : (i + 1) * HASH_SIZE])


def partial_cover(kept: Iterable[int], leaf_hashes: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
    """The maximal subtrees (start, end_exclusive, MTH) holding no kept leaf, in order.

    Together with the kept leaves' hashes they recompute the root
    (``root_from_partial``), and no smaller set of tree nodes does.
    """
    n = len(leaf_hashes)
    keep = sorted(set(kept))
    if keep and (keep[0] < 0 or keep[-1] >= n):
        raise ValueError(f"a kept leaf is outside the tree of size {n}")
    import bisect

    out: list[tuple[int, int, bytes]] = []

    def walk(lo: int, hi: int) -> None:
        i = bisect.bisect_left(keep, lo)
        if i == len(keep) or keep[i] >= hi:
            out.append((lo, hi, root(leaf_hashes[lo:hi])))
            return
        if hi - lo == 1:
            return
        k = _split(hi - lo)
        walk(lo, lo + k)
        walk(lo + k, hi)

    if n:
        walk(0, n)
    return out


def root_from_partial(size: int, kept: Mapping[int, bytes], cover: Sequence[tuple[int, int, bytes]]) -> bytes:
    """The root of a tree of ``size`` leaves from kept leaf hashes and a cover.

    ``kept`` maps leaf index to its leaf *hash*. Raises ValueError unless the
    cover's ranges are exactly subtrees of the RFC 9162 shape, every cover
    entry and every kept leaf is used once, and nothing overlaps: a kept leaf
    inside a cover range would otherwise go unchecked.
    """
    if size < 0:
        raise ValueError("negative tree size")
    ranges: dict[tuple[int, int], bytes] = {}
    for start, end, h in cover:
        if (start, end) in ranges or len(h) != HASH_SIZE:
            raise ValueError(f"cover entry [{start}, {end}) repeated or malformed")
        ranges[(start, end)] = h
    for i, h in kept.items():
        if not 0 <= i < size or len(h) != HASH_SIZE:
            raise ValueError(f"kept leaf {i} is outside the tree or malformed")
    if size == 0:
        if ranges or kept:
            raise ValueError("an empty tree has no leaves or subtrees")
        return EMPTY_ROOT
    used_ranges = 0
    used_leaves = 0

    def walk(lo: int, hi: int) -> bytes:
        nonlocal used_ranges, used_leaves
        h = ranges.get((lo, hi))
        if h is not None:
            used_ranges += 1
            return h
        if hi - lo == 1:
            leaf = kept.get(lo)
            if leaf is None:
                raise ValueError(f"leaf {lo} is neither kept nor covered")
            used_leaves += 1
            return leaf
        k = _split(hi - lo)
        return node_hash(walk(lo, lo + k), walk(lo + k, hi))

    r = walk(0, size)
    if used_ranges != len(ranges):
        raise ValueError("a cover entry is not a subtree of this tree or overlaps a kept leaf")
    if used_leaves != len(kept):
        raise ValueError("a kept leaf lies inside a cover entry")
    return r
