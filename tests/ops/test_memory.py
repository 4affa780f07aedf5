"""relay/memory.py: on glibc (every Linux image the relay runs on) both calls take effect."""

from __future__ import annotations

import ctypes

from relay import memory


def test_tune_pins_the_threshold_and_trim_returns_freed_heap() -> None:
    libc = memory._LIBC
    assert libc is not None, "not glibc: relay/memory.py would do nothing here"
    assert memory.tune() is True
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 << 10) for _ in range(512)]  # 32 MiB of heap, under the threshold
    assert all(blocks)
    for b in blocks:
        libc.free(b)
    assert memory.trim() is True  # the freed pages went back to the system
