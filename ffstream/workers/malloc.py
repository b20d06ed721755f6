"""glibc malloc settings for long-running workers: resident memory that levels off instead of creeping up.

A layer worker allocates and frees the same large buffers on every step: weight-sized gradients (16 MB at
2000 x 2000), activity batches received by ZeroMQ's I/O thread (0.5 MB at 64 x 2000), temporaries. With
glibc's defaults the mmap threshold moves up after the first large free, so these land in per-thread
arenas that fragment, and RSS of layers 2-4 grew by 30-50 % over two minutes (BENCHMARKS.md). A fixed
threshold above the largest per-step buffer, few arenas and a high trim threshold keep those buffers in
one reused heap. That heap still never shrinks by itself, so layers call trim() every 10 s
(measured in BENCHMARKS.md, "Memory"). heap_stats() and FFSTREAM_HEAP_LOG_S tell use from fragmentation.
No effect, and no error, where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

log = logging.getLogger("ffstream.workers.malloc")

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD = 32 * 1024 * 1024  # bytes; glibc's ceiling (HEAP_MAX_SIZE / 2 on 64-bit): buffers below it reuse the heap
TRIM_THRESHOLD = 256 * 1024 * 1024  # bytes of free heap top kept rather than returned, so a step's buffers are not refaulted
ARENA_MAX = 2  # the main thread and ZeroMQ's I/O thread, instead of one arena per thread that ever allocated


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_for_workers() -> bool:
    """Apply the settings to this process; True if glibc accepted all three."""
    try:
        mallopt = _libc().mallopt
    except AttributeError:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_ARENA_MAX, ARENA_MAX), (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    if not ok:
        log.debug("mallopt refused a setting; malloc defaults stay")
    return ok


def trim() -> bool:
    """Give the free pages inside the heap back to the OS (malloc_trim(0)); True if any were.

    The high trim threshold above keeps the heap's free top, and glibc never returns free holes below the top
    by itself: over minutes, the steps' temporaries land in new places and RSS becomes the heap's high-water
    mark, not its use. Trimmed pages the next steps want are faulted in again (about 1.5 µs a 4 KiB page, measured), so a
    layer trims every few seconds (workers/layer/worker.py TRIM_EVERY_S), not per step. False where libc is not glibc.
    """
    try:
        malloc_trim = _libc().malloc_trim
    except AttributeError:
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return malloc_trim(0) == 1


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_stats() -> dict[str, int] | None:
    """glibc's heap, in bytes: system (taken from the OS, arenas and mmapped chunks), in_use (malloc'd, not freed),
    free (held in the arenas' free lists and top), top (the free top of the main heap). None where there is no mallinfo2."""
    try:
        mallinfo2 = _libc().mallinfo2
    except AttributeError:
        return None
    mallinfo2.argtypes, mallinfo2.restype = [], _Mallinfo2
    m = mallinfo2()
    return {"system": m.arena + m.hblkhd, "in_use": m.uordblks + m.hblkhd, "free": m.fordblks, "top": m.keepcost}


def log_heap_every(seconds: float, extra=lambda: {}) -> threading.Thread:
    """Diagnostics (FFSTREAM_HEAP_LOG_S): log heap_stats() and extra() every `seconds` from a daemon thread."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            stats = heap_stats() or {}
            log.info("heap MiB: %s %s", " ".join(f"{k} {v / 2**20:.1f}" for k, v in stats.items()), extra())

    thread = threading.Thread(target=loop, name="heap-log", daemon=True)
    thread.start()
    return thread
