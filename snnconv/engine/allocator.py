"""Keep the engine's large CPU buffers in the heap instead of handing them back to the OS every chunk.

glibc serves allocations above its mmap threshold (at most 32 MB with the default dynamic threshold)
with fresh ``mmap`` pages and unmaps them on free. A chunk of a convolutional layer at batch 256 is tens
to hundreds of MB, so without this every chunk of every layer page-faults its output in anew, and the
first write to it (the neuron's comparison, a convolution) pays for zeroing the pages: measured 1.9x slower
on the Fashion-MNIST VGG at batch 256 (docs/benchmarks.md, section 3).

Raising the mmap and trim thresholds lets freed chunks be reused from the heap. The setting is
process-wide and kept for the life of the process (resident memory stays at its peak instead of
shrinking after a simulation). Set ``SNNCONV_KEEP_MALLOC=1`` to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # allocations above 1 GiB still get their own mapping
_TRIM_THRESHOLD = (1 << 31) - 1

_state: dict[str, bool] = {}


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl has mallopt as a no-op)
        return libc
    except (OSError, AttributeError):
        return None


def keep_large_buffers() -> bool:
    """Apply the thresholds once per process; True when glibc accepted them."""
    if "applied" in _state:
        return _state["applied"]
    libc = None if os.environ.get("SNNCONV_KEEP_MALLOC") == "1" else _glibc()
    applied = bool(libc) and bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) \
        and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    _state["applied"] = applied
    return applied
