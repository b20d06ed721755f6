"""offline/prefetch.py: read-ahead on a thread keeps order, raises the producer's errors, and stops when the consumer does."""

from __future__ import annotations

import threading

import pytest

from ffstream.offline.prefetch import prefetched
from tests.processes import eventually


def test_items_come_in_order_and_an_error_comes_where_it_happened():
    def make():
        yield from range(3)
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for item in prefetched(make):
            got.append(item)
    assert got == [0, 1, 2]


def test_an_error_opening_the_source_reaches_the_consumer():
    def make():
        raise FileNotFoundError("no such video")

    with pytest.raises(FileNotFoundError, match="no such video"):
        next(prefetched(make))


def test_a_consumer_that_stops_early_closes_the_producer_on_its_thread():
    closed = threading.Event()
    produced = []

    def make():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()  # what `with open_source(...)` does at this point: the source is closed

    items = prefetched(make, depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    eventually(closed.is_set, timeout=10, what="the producer's generator to be closed")
    assert len(produced) <= 3 + 2 + 1  # read at most `depth` (and the one in hand) ahead, then stopped
