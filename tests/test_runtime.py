"""retain_freed_memory keeps a freed large tensor's memory in the malloc heap, where the next one reuses it."""

import ctypes

import pytest
import torch

from diffsampler.agents.runtime import retain_freed_memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _mallinfo():
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    fn.restype = _MallInfo2
    return fn()


def test_large_blocks_come_from_the_heap_and_stay_there_after_free():
    _mallinfo()  # skips off glibc
    assert retain_freed_memory() and retain_freed_memory()  # applies, and again is a no-op
    size = 64 << 20
    mmapped = _mallinfo().hblkhd
    x = torch.empty(size // 4)
    assert _mallinfo().hblkhd - mmapped < size  # not a fresh mmap
    del x
    assert _mallinfo().fordblks >= size  # kept for reuse, not returned to the kernel
