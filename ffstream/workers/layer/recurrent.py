"""Recurrent layer worker: a layer worker that also hears the layer above, one step late, on a feedback socket.

    layer i ──activity──▶ layer i+1
       ▲                     │
       └─────feedback────────┘   latest value wins; nothing waits for it

Each layer (but the top) binds a PULL with a receive queue of one message and,
before every forward pass, drains it without waiting, keeping only the newest
message per mode (learn or eval) and, on static images, per batch. Each layer (but the bottom) sends its
normalised activity down with a non-blocking send that is dropped when the
queue is full. So a slow layer above only makes the feedback older, never the
layer below slower.

Which feedback belongs to which step is read from the header: "frame" is the
source batch and "step" the iteration of it.
- Static images (`iterations` > 1): the source sends each batch `iterations`
  times, two batches' steps in turn (INTERLEAVED_BATCHES), so that the layer
  above has finished step t−1 of a batch by the time this one starts its step t.
  The feedback of an earlier step of the same frames is used row by row;
  anything else (another batch, no feedback yet) counts as silence from above.
  The old state is this layer's own state of the previous step of those frames.
- Video (`iterations` = 1): consecutive batches are the steps. The newest frame
  above (the last row of the newest feedback) is the context of every frame of
  the batch, and the old state is this layer's state of the newest frame; with
  `--batch 1` that is exactly frame t−1.

The top layer of a supervised stack hears the label instead (neutral on eval
copies); the top layer of an unsupervised one hears nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import zmq

from ffstream.config.plans import Batching
from ffstream.ff import LayerConfig
from ffstream.ff.recurrent import DAMPING, RecurrentFFLayer, top_down_label
from ffstream.ff.recurrent_config import INTERLEAVED_BATCHES
from ffstream.net import wire
from ffstream.net.transport import Receiver, try_send
from ffstream.workers.layer.worker import LayerWorker
from ffstream.monitor.stats import Ema

HELD_KEYS = 4 * INTERLEAVED_BATCHES  # states and feedback kept: the interleaved batches, learn and eval, with room to spare


class RecurrentLayerWorker(LayerWorker):
    kind = "layer"

    def __init__(
        self,
        index: int,
        layer_config: LayerConfig,
        endpoints,
        *,
        top_down_features: int,  # width of the layer above; the label slots for a supervised top layer; 0 for an unsupervised top
        feedback_input: str | None,  # PULL, bound: feedback from the layer above; None for the top layer
        feedback_output: str | None,  # PUSH, connected: the layer below's feedback input; None for layer 1
        label_classes: int | None = None,  # supervised top layer: the label is its top-down input
        iterations: int = 1,  # steps per source batch: > 1 for static images, 1 for video
        damping: float = DAMPING,
        batching: Batching = Batching(),  # only max_rows = 1 message per micro-batch makes sense here, see below
        **kwargs: Any,
    ):
        self.top_down_features = top_down_features
        self.damping = damping
        super().__init__(index, layer_config, endpoints, num_classes=None, batching=Batching(max_rows=1), **kwargs)
        # One message per micro-batch: two steps of the same frames in one batch would both use the state before them.
        self.feedback_input = feedback_input
        self.feedback_output = feedback_output
        self.label_classes = label_classes
        self.iterations = iterations
        # Keyed by _key: (mode, frame) for static images, whose batches the source interleaves; (mode, None) for video.
        self.latest_feedback: dict[tuple, wire.Message] = {}  # the newest feedback message
        self.states: dict[tuple, torch.Tensor] = {}  # this layer's state (B, N) at its last step
        self.feedback_received = 0
        self.feedback_sent = 0
        self.feedback_dropped = 0  # sends refused because the layer below had not taken the last one
        self.rows_with_feedback = 0
        self.rows_without_feedback = 0
        self.feedback_lag = Ema(0.05)  # steps (static) or frames (video) between the feedback and the frames it is used on

    def make_layer(self, layer_config: LayerConfig) -> RecurrentFFLayer:
        return RecurrentFFLayer(layer_config, self.top_down_features, self.damping)

    def setup(self) -> None:
        super().setup()
        self.feedback_in = None
        if self.feedback_input:
            self.feedback_in = Receiver(self.socket(zmq.PULL, bind=self.feedback_input, hwm=1), name=f"{self.name}.fb")
        self.feedback_out = self.socket(zmq.PUSH, connect=self.feedback_output, hwm=1, watch=False) if self.feedback_output else None

    def _key(self, msg: wire.Message) -> tuple:
        """Which state and feedback a message goes with: its batch's own on static images, the newest on video."""
        return (msg.mode, _position(msg)[0] if self.iterations > 1 else None)

    # top-down input ------------------------------------------------------------------------
    def _drain_feedback(self) -> None:
        """Take everything queued, keep the newest per mode (and batch, on static images): never waits."""
        while self.feedback_in is not None and self.feedback_in.sock.poll(0):
            msg = self.feedback_in.recv_ready()
            if msg is None:
                continue
            if msg.kind != "feedback" or msg.array.ndim != 2 or msg.array.shape[1] != self.top_down_features:
                self.dropped["feedback"] += 1
                continue
            self.feedback_received += 1
            _remember(self.latest_feedback, self._key(msg), msg)

    def _inputs(self, msg: wire.Message, eval_mode: bool) -> torch.Tensor | None:
        """[x from below | z from above at t−1 | own state at t−1]: (B, D+T+N)."""
        x = super()._inputs(msg, eval_mode)
        if x is None:
            return None
        rows = len(x)
        z = self._top_down(msg, rows, eval_mode)
        if z is None:
            return None
        return self.layer.pack(x, z, self._old_state(msg, rows))

    def _top_down(self, msg: wire.Message, rows: int, eval_mode: bool) -> torch.Tensor | None:
        width = self.top_down_features
        if self.feedback_in is None:  # the top layer
            if not self.label_classes:
                return torch.zeros(rows, width, device=self.device)
            if eval_mode:
                return top_down_label(None, rows, width, self.label_scale, self.device)
            if msg.label is None or max(msg.label, default=0) >= width:
                self.dropped["label"] += 1
                return None
            return top_down_label(torch.tensor(msg.label), rows, width, self.label_scale, self.device)
        self._drain_feedback()
        fb = self.latest_feedback.get(self._key(msg))
        frame, step = _position(msg)
        if fb is not None and self.iterations > 1:
            fb_frame, fb_step = _position(fb)
            if fb_frame == frame and fb_step < step and len(fb.array) == rows:
                self.rows_with_feedback += rows
                self.feedback_lag.add(step - fb_step)
                return torch.from_numpy(np.array(fb.array, np.float32)).to(self.device)
        elif fb is not None:
            self.rows_with_feedback += rows
            self.feedback_lag.add(frame - _position(fb)[0])
            return torch.from_numpy(np.array(fb.array[-1:], np.float32)).to(self.device).expand(rows, width)
        self.rows_without_feedback += rows
        return torch.zeros(rows, width, device=self.device)

    def _old_state(self, msg: wire.Message, rows: int) -> torch.Tensor:
        state = self.states.get(self._key(msg))  # static images: the key names the batch, so it is these frames'
        width = self.layer.cfg.width
        if state is None or (self.iterations > 1 and len(state) != rows):
            return torch.zeros(rows, width, device=self.device)
        return state if self.iterations > 1 else state[-1:].expand(rows, width)

    # after each forward pass: remember the state, send the activity down -----------------
    def _on_activity(self, messages: list[wire.Message], h: torch.Tensor, act: np.ndarray) -> None:
        start = 0
        for msg in messages:
            rows = slice(start, start + len(msg.array))
            start = rows.stop
            _remember(self.states, self._key(msg), h[rows].detach())
            if self.feedback_out is None:
                continue
            frame, step = _position(msg)
            down = wire.Message("feedback", np.ascontiguousarray(act[rows]), stream=msg.stream, seq=msg.seq, t_src=msg.t_src,
                                mode=msg.mode, extra={"frame": frame, "step": step, "layer": self.index})
            if try_send(self.feedback_out, down):
                self.feedback_sent += 1
            else:
                self.feedback_dropped += 1  # the layer below has not read the last one: the newer one would win anyway

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(
            recurrent=True,
            feedback_received=self.feedback_received,
            feedback_sent=self.feedback_sent,
            feedback_dropped=self.feedback_dropped,
            rows_with_feedback=self.rows_with_feedback,
            rows_without_feedback=self.rows_without_feedback,
            feedback_lag=self.feedback_lag.get(),
        )
        return m

    def dropped_total(self) -> int:
        extra = sum(self.feedback_in.rejected.values()) if getattr(self, "feedback_in", None) is not None else 0
        return super().dropped_total() + extra


def _remember(held: dict, key: tuple, value: Any) -> None:
    """held[key] = value, the oldest keys dropped past HELD_KEYS: the batches in flight, per mode, and no more."""
    held.pop(key, None)
    held[key] = value
    while len(held) > HELD_KEYS:
        del held[next(iter(held))]


def _position(msg: wire.Message) -> tuple[int, int]:
    """(frame, step) of a message: the source batch and the iteration of it; plain frames are step 0 of their seq."""
    frame, step = msg.extra.get("frame", msg.seq), msg.extra.get("step", 0)
    ok = all(wire.is_int(v) for v in (frame, step))
    return (frame, step) if ok else (msg.seq, 0)
