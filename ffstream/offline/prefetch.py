"""Read ahead on another thread: a source decodes and resizes the next batch while torch computes on this one.

Decoding (PyAV), resizing (OpenCV) and the forward pass (torch) all release the GIL, so on two cores the two halves
overlap, and a batch costs about the slower of the two instead of their sum.

>>> list(prefetched(lambda: iter(range(5))))
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()  # the producer ran out
PUT_WAIT_S = 0.1  # how often a producer with a full queue looks whether the consumer has gone


def prefetched(make: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """The items of `make()`, produced on a daemon thread up to `depth` ahead of the consumer, in order.

    `make` runs on that thread, so whatever it opens is opened, read and closed there. An exception it raises is raised
    here, at the item where it happened. Closing this generator early (break, an exception in the consumer) stops the
    producer at its next item and lets it close what it opened."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=PUT_WAIT_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        made = None
        try:
            made = make()
            for item in made:
                if not put(item):
                    return  # the consumer went away
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(made, "close", None)
            if close is not None:
                close()  # a generator's `with open_source(...)` closes its source here, on this thread

    thread = threading.Thread(target=produce, name="ffstream prefetch", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = items.get(timeout=1.0)
            except queue.Empty:
                if thread.is_alive():
                    continue  # a slow read (a live camera between frames, a large decode)
                raise RuntimeError("the prefetch thread ended without a word") from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)  # it notices within PUT_WAIT_S, or after the item it is reading
