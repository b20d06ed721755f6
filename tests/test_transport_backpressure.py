"""A data link held by backpressure for longer than a control link's heartbeat timeout loses nothing.

A receiver that is not read (a layer waiting on the next one, which restarts) stops reading its connection, PONGs
included. With the 10 s ZMTP heartbeat timeout on data links the sender's queue went with the dropped connection:
193 of 400 batches over a 25 s hold (docker-compose made it happen every time a layer restarted on a loaded box).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from ffstream.net import wire
from ffstream.net.transport import DATA_HEARTBEAT_TIMEOUT_MS, HEARTBEAT_TIMEOUT_MS, make_socket, send

BATCHES = 200
HOLD_S = HEARTBEAT_TIMEOUT_MS / 1000 + 5  # past the control links' timeout, well within the data links'


def test_a_receiver_held_past_the_control_heartbeat_timeout_loses_no_batch(zmq_context):
    assert HOLD_S * 1000 < DATA_HEARTBEAT_TIMEOUT_MS
    pull = make_socket(zmq_context, zmq.PULL, bind="tcp://127.0.0.1:*", hwm=4)
    push = make_socket(zmq_context, zmq.PUSH, connect=pull.getsockopt_string(zmq.LAST_ENDPOINT), hwm=4)
    stop = threading.Event()
    sent = []

    def produce():
        for seq in range(BATCHES):
            if send(push, wire.Message("frames", np.zeros((10, 784), np.float32), seq=seq), stop.is_set):
                sent.append(seq)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    got = []
    try:
        assert pull.poll(10_000), "the first batch never came"
        got.append(wire.decode(pull.recv_multipart()).seq)
        stop.wait(HOLD_S)  # the hold itself: nothing is read off the link meanwhile
        deadline = time.monotonic() + 60
        while len(got) < BATCHES and time.monotonic() < deadline:
            if pull.poll(1000):
                got.append(wire.decode(pull.recv_multipart()).seq)
    finally:
        stop.set()
        producer.join(10)
        push.close(linger=0)
        pull.close(linger=0)
    assert sent == list(range(BATCHES)), "the sender gave up"
    assert got == list(range(BATCHES)), f"lost {sorted(set(range(BATCHES)) - set(got))[:20]} of {BATCHES}"
