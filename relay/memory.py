"""Give memory back to the system after big, short-lived work (archiving, thinning).

Measured with bench/longrun.py (docs/benchmarks.md, issue 14): the relay's
Python heap stays flat from day to day (tracemalloc), but its RSS did not,
because glibc's allocator keeps what was freed. Archiving compresses whole
epochs with zstd at level 19, whose working memory is tens of MB a context;
after the first such buffer is freed, glibc raises its mmap threshold, so
the next ones come from the heap and stay there when freed. ``tune`` pins
the threshold (big buffers are always mapped, and unmapped when freed) and
``trim`` hands freed heap pages back (``malloc_trim``). Both do nothing off
glibc (musl, macOS), where the allocator behaves differently.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 1 << 20  # buffers of 1 MiB or more are mapped, and unmapped when freed


def _glibc() -> Any:
    """glibc, or None when the C library is another one."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def tune() -> bool:
    """Pin glibc's mmap threshold; True when it was set (idempotent)."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Return freed heap memory to the system; True when some was."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
