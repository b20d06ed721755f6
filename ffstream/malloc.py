"""glibc malloc settings for long-running workers: resident memory that levels off instead of creeping up.

A layer worker allocates and frees the same large buffers on every step: weight-sized gradients (16 MB at
2000 x 2000), activity batches received by ZeroMQ's I/O thread (0.5 MB at 64 x 2000), temporaries. With
glibc's defaults the mmap threshold moves up after the first large free, so these land in per-thread
arenas that fragment, and RSS of layers 2-4 grew by 30-50 % over two minutes (BENCHMARKS.md). A fixed
threshold above the largest per-step buffer, few arenas and a high trim threshold keep those buffers in
one reused heap: RSS levels off (measured in BENCHMARKS.md). No effect, and no error, where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("ffstream.malloc")

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD = 32 * 1024 * 1024  # bytes; glibc's ceiling (HEAP_MAX_SIZE / 2 on 64-bit): buffers below it reuse the heap
TRIM_THRESHOLD = 256 * 1024 * 1024  # bytes of free heap top kept rather than returned, so a step's buffers are not refaulted
ARENA_MAX = 2  # the main thread and ZeroMQ's I/O thread, instead of one arena per thread that ever allocated


def tune_for_workers() -> bool:
    """Apply the settings to this process; True if glibc accepted all three."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_ARENA_MAX, ARENA_MAX), (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    if not ok:
        log.debug("mallopt refused a setting; malloc defaults stay")
    return ok
