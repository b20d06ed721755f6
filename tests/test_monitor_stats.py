"""Running figures of the monitor (ffstream/monitor/stats.py)."""

from __future__ import annotations

from ffstream.monitor.stats import Rate


def test_a_rate_counts_from_the_first_event_to_the_latest_not_to_now():
    now = [0.0]
    rate = Rate(lambda: now[0])
    assert rate.get() == 0.0
    rate.add(64)  # starts the clock
    now[0] = 1.0
    rate.add(64)
    now[0] = 2.0
    rate.add(64)
    assert rate.get() == 64.0
    now[0] = 10.0  # the stream ended at 2 s; the worker waits to be stopped
    assert rate.get() == 64.0
