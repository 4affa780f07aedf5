"""RFC 9162 Merkle trees (relay/merkle.py): reference vectors and properties.

The vectors are the Certificate Transparency reference ones (RFC 6962 test
data, as published with the C++/Go CT code and transparency-dev/merkle): a
tree no other implementation agrees with would prove nothing to a third
party. The properties compare every function against a deliberately naive
transcription of the RFC's recursive definitions.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from relay import merkle

DATA = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAVES = [merkle.leaf_hash(d) for d in DATA]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CONSISTENCY = [
    (
        2,
        8,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


# -- the RFC's definitions, transcribed naively (recursion on slices) ---------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(h: list[bytes]) -> bytes:
    if not h:
        return hashlib.sha256(b"").digest()
    if len(h) == 1:
        return h[0]
    k = _k(len(h))
    return hashlib.sha256(b"\x01" + mth(h[:k]) + mth(h[k:])).digest()


def path(m: int, h: list[bytes]) -> list[bytes]:
    if len(h) == 1:
        return []
    k = _k(len(h))
    if m < k:
        return [*path(m, h[:k]), mth(h[k:])]
    return [*path(m - k, h[k:]), mth(h[:k])]


def subproof(m: int, h: list[bytes], b: bool) -> list[bytes]:
    if m == len(h):
        return [] if b else [mth(h)]
    k = _k(len(h))
    if m <= k:
        return [*subproof(m, h[:k], b), mth(h[k:])]
    return [*subproof(m - k, h[k:], False), mth(h[:k])]


def hashes(n: int, seed: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(f"{seed}:{i}".encode()) for i in range(n)]


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


# -- reference vectors ---------------------------------------------------------


def test_roots_match_the_ct_reference_for_sizes_0_to_8() -> None:
    for n in range(9):
        assert merkle.root(LEAVES[:n]).hex() == ROOTS[n]
    assert merkle.EMPTY_ROOT.hex() == ROOTS[0]
    assert merkle.node_hash(LEAVES[0], LEAVES[1]).hex() == ROOTS[2]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_ct_reference(index: int, size: int, proof: list[str]) -> None:
    got = merkle.inclusion_proof(index, LEAVES[:size])
    assert [p.hex() for p in got] == proof
    assert merkle.verify_inclusion(index, size, LEAVES[index], got, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_ct_reference(old: int, new: int, proof: list[str]) -> None:
    got = merkle.consistency_proof(old, LEAVES[:new])
    assert [p.hex() for p in got] == proof
    assert merkle.verify_consistency(old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), got)


def test_degenerate_consistency_cases() -> None:
    r4, r5 = merkle.root(LEAVES[:4]), merkle.root(LEAVES[:5])
    assert merkle.verify_consistency(4, 4, r4, r4, [])
    assert not merkle.verify_consistency(4, 4, r4, r5, [])
    assert not merkle.verify_consistency(4, 4, r4, r4, [bytes(32)])
    assert merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, r5, [])
    assert not merkle.verify_consistency(0, 5, r4, r5, [])
    assert not merkle.verify_consistency(5, 4, r5, r4, merkle.consistency_proof(4, LEAVES[:5]))
    assert not merkle.verify_consistency(3, 5, merkle.root(LEAVES[:3]), r5, [])
    with pytest.raises(ValueError):
        merkle.inclusion_proof(8, LEAVES)
    with pytest.raises(ValueError):
        merkle.consistency_proof(9, LEAVES)


# -- properties ----------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=160)


@given(n=st.integers(min_value=0, max_value=160))
def test_root_and_builder_agree_with_the_rfc_definition(n: int) -> None:
    h = hashes(n)
    assert merkle.root(h) == mth(h)


@given(data=st.data(), n=st.integers(min_value=0, max_value=300))
def test_extend_in_any_chunks_builds_the_rfc_tree(data: st.DataObject, n: int) -> None:
    """``TreeBuilder.extend`` (verify's fast path) cuts leaves into perfect subtrees
    aligned to the running size; any misalignment gives another root."""
    h = hashes(n)
    b = merkle.TreeBuilder()
    i = 0
    while i < n:
        k = data.draw(st.integers(min_value=1, max_value=n - i))
        b.extend(h[i : i + k])
        if data.draw(st.booleans()) and i + k < n:
            b.append(h[i + k])  # mixed with single appends, as the slow pass does
            k += 1
        i += k
    assert b.size == n
    assert b.root() == mth(h)


@given(data=st.data(), n=sizes)
def test_every_inclusion_proof_verifies_and_any_change_fails(data: st.DataObject, n: int) -> None:
    h = hashes(n)
    r = mth(h)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(i, h)
    assert proof == path(i, h)
    assert merkle.verify_inclusion(i, n, h[i], proof, r)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[j] = flip(bad[j], bit)
        assert not merkle.verify_inclusion(i, n, h[i], bad, r)
        assert not merkle.verify_inclusion(i, n, h[i], proof[:-1], r)
        assert not merkle.verify_inclusion(i, n, h[i], [*proof, bytes(32)], r)
    assert not merkle.verify_inclusion(i, n, flip(h[i], data.draw(st.integers(0, 255))), proof, r)
    assert not merkle.verify_inclusion(i, n, h[i], proof, flip(r, data.draw(st.integers(0, 255))))
    other = data.draw(st.integers(-1, n + 1).filter(lambda x: x != i))
    assume(not (0 <= other < n and h[other] == h[i]))
    assert not merkle.verify_inclusion(other, n, h[i], proof, r)
    wrong = data.draw(st.integers(i + 1, n + 64).filter(lambda x: x != n))
    # A wrong size fails whenever the leaf's audit path has a different shape
    # in a tree of that size. (Where the shapes coincide the RFC's algorithm
    # computes the same hash: a tree head binds its size by carrying it, which
    # is why checkpoints and EpochSealed record the size beside the root.)
    if len(path(i, hashes(wrong))) != len(proof):
        assert not merkle.verify_inclusion(i, wrong, h[i], proof, r)


@given(data=st.data(), n=sizes)
def test_every_consistency_proof_verifies_and_any_change_fails(data: st.DataObject, n: int) -> None:
    h = hashes(n)
    m = data.draw(st.integers(0, n))
    old, new = mth(h[:m]), mth(h)
    proof = merkle.consistency_proof(m, h)
    assert proof == ([] if m in (0, n) else subproof(m, h, True))
    assert merkle.verify_consistency(m, n, old, new, proof)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = flip(bad[j], data.draw(st.integers(0, 255)))
        assert not merkle.verify_consistency(m, n, old, new, bad)
        assert not merkle.verify_consistency(m, n, old, new, proof[:-1])
        assert not merkle.verify_consistency(m, n, old, new, [*proof, bytes(32)])
    if m > 0:
        # (Every tree extends the empty one, so with m == 0 only the old root matters.)
        assert not merkle.verify_consistency(m, n, flip(old, data.draw(st.integers(0, 255))), new, proof)
        assert not merkle.verify_consistency(m, n, old, flip(new, data.draw(st.integers(0, 255))), proof)
    if 0 < m < n:
        wrong = data.draw(st.integers(1, n - 1).filter(lambda x: x != m))
        assert not merkle.verify_consistency(wrong, n, old, new, proof)
        # A log that rewrote an old leaf is not an extension, whatever proof it offers.
        forked = list(h)
        forked[data.draw(st.integers(0, m - 1))] = merkle.leaf_hash(b"forged")
        assert not merkle.verify_consistency(m, n, old, mth(forked), merkle.consistency_proof(m, forked))


@given(data=st.data(), n=st.integers(0, 160))
def test_partial_cover_recomputes_the_root_and_is_minimal(data: st.DataObject, n: int) -> None:
    h = hashes(n)
    kept = data.draw(st.sets(st.integers(0, n - 1), max_size=n)) if n else set()
    cover = merkle.partial_cover(kept, h)
    assert merkle.root_from_partial(n, {i: h[i] for i in kept}, cover) == mth(h)
    # It covers exactly the dropped leaves, in order, each range disjoint.
    covered = [i for s, e, _ in cover for i in range(s, e)]
    assert covered == [i for i in range(n) if i not in kept]
    for s, e, x in cover:
        assert x == mth(h[s:e])
    # Minimal: no two neighbouring cover entries are the two children of one
    # node (else their parent alone would do), so the cover is the maximal
    # subtrees free of kept leaves.
    starts = {(s, e) for s, e, _ in cover}

    def parents(lo: int, hi: int) -> None:
        if hi - lo <= 1:
            return
        k = _k(hi - lo)
        assert not ((lo, lo + k) in starts and (lo + k, hi) in starts)
        parents(lo, lo + k)
        parents(lo + k, hi)

    parents(0, n)


@given(data=st.data(), n=st.integers(2, 200))
def test_root_from_partial_rejects_edits_and_hidden_leaves(data: st.DataObject, n: int) -> None:
    h = hashes(n)
    kept = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1))
    cover = merkle.partial_cover(kept, h)
    good = {i: h[i] for i in kept}
    r = mth(h)
    # A kept leaf edited: a different root.
    i = data.draw(st.sampled_from(sorted(kept)))
    assert merkle.root_from_partial(n, {**good, i: flip(h[i], 3)}, cover) != r
    # A cover hash edited: a different root.
    j = data.draw(st.integers(0, len(cover) - 1))
    s, e, x = cover[j]
    edited = [*cover[:j], (s, e, flip(x, 5)), *cover[j + 1 :]]
    assert merkle.root_from_partial(n, good, edited) != r
    # A cover entry dropped: refused.
    with pytest.raises(ValueError):
        merkle.root_from_partial(n, good, cover[:j] + cover[j + 1 :])
    # A kept leaf hidden behind a subtree hash (the root is right, the leaf unchecked): refused.
    full = merkle.partial_cover([], h)
    with pytest.raises(ValueError):
        merkle.root_from_partial(n, good, full)
    # A range that is not a node of this tree: refused.
    with pytest.raises(ValueError):
        merkle.root_from_partial(n, good, [*cover, (n, n + 1, bytes(32))])


@given(data=st.data(), n=st.integers(0, 160))
def test_packed_hashes_read_as_the_list_they_were_built_from(data: st.DataObject, n: int) -> None:
    """Thinning keeps its leaf hashes in one buffer (PackedHashes, for memory: issue 14); the
    cover it computes from them must be the one a plain list gives. Catches an off-by-one in
    the buffer's offsets (e.g. ``i * HASH_SIZE + 1``) or a slice that drops its last hash."""
    h = hashes(n)
    packed = merkle.PackedHashes()
    for x in h:
        packed.append(x)
    assert len(packed) == n
    assert list(packed) == h
    if n:
        i = data.draw(st.integers(-n, n - 1))
        assert packed[i] == h[i]
    lo = data.draw(st.integers(0, n))
    hi = data.draw(st.integers(0, n))
    assert list(packed[lo:hi]) == h[lo:hi]
    kept = data.draw(st.sets(st.integers(0, n - 1), max_size=n)) if n else set()
    assert merkle.partial_cover(kept, packed) == merkle.partial_cover(kept, h)
    with pytest.raises(IndexError):
        packed[n]
    with pytest.raises(ValueError):
        packed.append(b"short")
