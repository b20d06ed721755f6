"""Where a layer worker's activity goes: the next layer (or the sink), one message per message received."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
import zmq

from ffstream.ff import FFLayer
from ffstream.net import blocks as eval_blocks
from ffstream.net import carry
from ffstream.net import wire
from ffstream.net.transport import send
from ffstream.monitor.stats import Ema

OnActivity = Callable[[list[wire.Message], torch.Tensor, np.ndarray], None]  # (messages, h (B, N), normalised act): a hook


class Outlet:
    def __init__(self, sock: zmq.Socket, layer: FFLayer, wire_dtype: np.dtype, stopping: Callable[[], bool],
                 dropped: Counter, latency_ms: Ema, on_activity: OnActivity, index: int = 1,
                 carried: frozenset[int] | None = None):
        self.sock = sock  # PUSH, connected to the next layer's (or the sink's) input
        self.layer = layer  # the worker's layer: normalises and scores what goes on
        self.wire_dtype = wire_dtype  # float32 or float16 on the wire (computed in float32)
        self.stopping = stopping  # a send gives up when the worker stops
        self.dropped = dropped  # the worker's drop counts
        self.latency_ms = latency_ms  # source-to-here latency of learned frames, recorded as they go on
        self.on_activity = on_activity  # the worker's hook, called with every forward pass (recurrent.py sends it down)
        self.index = index  # this layer's 1-based position
        # topology.features: the 1-based layers whose activity learn messages carry up to the sink (net/carry.py); None: off
        self.carried = carried

    def activity(self, kept: list[tuple[wire.Message, torch.Tensor]], h: torch.Tensor) -> bool:
        """Send the normalised activity h (B, N) of a learn micro-batch on; False (and nothing sent) when non-finite."""
        g = self.layer.goodness(h)
        act = self.layer.normalize(h).cpu().numpy()  # normalised activity: well inside float16's range
        if not np.isfinite(act).all():  # the weights were non-finite: rolled back at the step, and nothing is sent on
            self.dropped["non_finite_activity"] += len(kept)
            return False
        self.on_activity([m for m, _ in kept], h, act)
        act = act.astype(self.wire_dtype, copy=False)
        start = 0
        for msg, xi in kept:
            rows = slice(start, start + len(xi))
            start += len(xi)
            self.latency_ms.add((time.time() - msg.t_src) * 1000)
            array, extra = act[rows], msg.extra
            if self.carried is not None:
                array, extra = carry.add_layer(msg.array, msg.extra, array, self.index, self.carried)
            self.send_on(msg, array, (msg.trace or []) + [[round(float(v), 4) for v in g[rows]]], extra)
        return True

    def eval(self, msg: wire.Message, h: torch.Tensor) -> int:
        """Send an eval message's activity h on, with the readout features of every layer so far (net/blocks.py); its rows."""
        act = self.layer.normalize(h).flatten(1).cpu().numpy()  # (B, N)
        self.on_activity([msg], h, act)
        features = self.layer.features(h).cpu().numpy()  # (B, F): the activity itself (dense), or a pooled map (spatial)
        out, blocks = eval_blocks.add_layer(np.asarray(msg.array), msg.extra.get(eval_blocks.KEY), features, act, self.wire_dtype)
        trace = (msg.trace or []) + [[round(float(v), 4) for v in self.layer.goodness(h)]]
        self.send_on(msg, out, trace, {**msg.extra, eval_blocks.KEY: blocks})
        return len(act)

    def send_on(self, msg: wire.Message, array: np.ndarray, trace: list, extra: dict) -> None:
        out = wire.Message("activity", array, stream=msg.stream, seq=msg.seq, t_src=msg.t_src, label=msg.label, mode=msg.mode,
                           trace=trace, extra=extra)
        if not send(self.sock, out, self.stopping):
            self.dropped["not_sent"] += 1
