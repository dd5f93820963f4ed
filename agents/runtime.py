"""Process-wide settings that make CPU training fast.

Every training iteration allocates a few tensors of B x T x d floats (Manywell-512, batch 300, T = 100:
60 MB each) and frees them again. glibc's malloc serves blocks above its mmap threshold (32 MB at most)
with fresh pages from ``mmap`` and returns them to the kernel on ``free``, so each such tensor pays a
page fault per 4 KiB page when first written, every iteration: on Manywell-512 that was half of a TB
iteration (351 -> 181 ms). ``retain_freed_memory`` has malloc serve large blocks from its heap and keep
freed memory there for reuse instead (``mallopt(M_MMAP_MAX, 0)``, trim threshold 2 GiB). The process
then keeps its peak heap for its lifetime, which a training process does anyway.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # a C int: keep up to 2 GiB of freed memory at the top of the heap

_applied = False


def retain_freed_memory() -> bool:
    """Keep large freed blocks in the malloc heap (glibc only; idempotent). Returns whether it applies."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
