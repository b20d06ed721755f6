"""Layer worker: owns one FF layer, passes activity up at once, and steps as its step policy says (policies.py)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import zmq

from ffstream.config.plans import Batching, LayerEndpoints
from ffstream.ff import FFLayer, LayerConfig, RateSchedule
from ffstream.ff.spec import make_layer as layer_of_kind
from ffstream.monitor.stats import Phases
from ffstream.net import wire
from ffstream.net.transport import POLL_MS, Receiver, send, try_send
from ffstream.workers import malloc
from ffstream.workers.base import Worker
from ffstream.workers.layer import weights
from ffstream.workers.layer.checkpoints import FRAMES_KEY, LayerCheckpoints
from ffstream.workers.layer.delivery import LayerDelivery
from ffstream.workers.layer.figures import LayerFigures
from ffstream.workers.layer.intake import LabelSlots, gather
from ffstream.workers.layer.negatives import NegativeInbox
from ffstream.workers.layer.outlet import Outlet
from ffstream.workers.layer.policies import Immediate, StepPolicy
from ffstream.workers.layer.preview import WeightPreview
from ffstream.workers.layer.stepping import NegativeChain, Stepper

# Negatives join the next positive step, as in the interleaved reference: a step on negatives alone
# flips the sign of the update and measurably hurts. Only when the wake path has been idle this long,
# or MAX_PENDING_NEGATIVES negative batches wait (negatives.py), does a layer step on negatives alone.
IDLE_WAKE_S = 1.0
TRIM_EVERY_S = 10.0  # seconds between malloc_trim calls: RSS follows the heap's use, not its high-water mark (workers/malloc.py)


class LayerWorker(Worker):
    kind = "layer"

    def __init__(
        self,
        index: int,  # 1-based position in the stack
        layer_config: LayerConfig,
        endpoints: LayerEndpoints,
        *,
        num_classes: int | None = None,  # layer 1 of a supervised stack writes labels into its input
        label_scale: float = 1.0,  # the value of the label's one-hot slot
        label_relative: bool = False,  # that value times each frame's RMS (ff/labels.py slot_value)
        lr_schedule: RateSchedule = RateSchedule(),  # the learning rate by frames learned; default: constant
        policy: type[StepPolicy] = Immediate,  # when to step, on which negatives (policies.py; build.py chooses it)
        batching: Batching = Batching(),
        checkpoint_dir: str | None = None,
        checkpoint_every_s: float = 60.0,
        max_frames: int | None = None,  # stop after this many learned rows
        exit_on_end: bool = False,  # stop once the end-of-stream marker has passed (in-process tests); else wait for stop()
        device: str = "cpu",  # torch device of the weights: cpu, cuda, cuda:N
        wire_dtype: str = "float32",  # dtype of the activity sent on: "float32" or "float16" (half the bytes; computed in float32)
        checkpoint_meta: dict | None = None,  # saved with each checkpoint, e.g. the frame shape, for `ffstream eval`
        preview_shape: tuple[int, int, int] | None = None,  # the input frame (C, H, W): send weight previews to the monitor; None: none
        features_layers: tuple[int, ...] | None = None,  # topology.features on: the 1-based layers whose activity learn messages carry up (net/carry.py); None: off
        rewind_addr: str | None = None,  # PUSH, connected: the source's control socket, where a gap is reported at once (exactly-once); None: at barriers only
        **worker_kwargs: Any,
    ):
        super().__init__(f"layer{index}", **worker_kwargs)
        self.index, self.endpoints, self.batching = index, endpoints, batching
        self.num_classes, self.label_scale, self.label_relative = num_classes, label_scale, label_relative
        self.checkpoint_dir, self.checkpoint_every_s = checkpoint_dir, checkpoint_every_s
        self.max_frames, self.exit_on_end = max_frames, exit_on_end
        self.rewind_addr = rewind_addr
        self.device = torch.device(device)
        self.wire_dtype = wire.float_dtype(wire_dtype)
        self.checkpoint_meta = {"index": index, "num_classes": num_classes, "label_scale": label_scale, "label_relative": label_relative, **(checkpoint_meta or {})}
        self.layer = self.make_layer(layer_config).to(self.device)
        self.labels = LabelSlots(self.layer.cfg.in_features, num_classes, label_scale, label_relative, self.device)
        self.features_layers = frozenset(features_layers) if features_layers is not None else None
        self.preview = WeightPreview(self.layer, preview_shape, index, self.log) if preview_shape else None
        self.figures = LayerFigures()
        saved = weights.resume(checkpoint_dir, index, self.layer, self.log)
        # what a divergent step rolls back to; its learning-rate schedule goes on from the frames the checkpoint learned
        self.last_good = weights.LastGood(self.layer, lr_schedule, self.log, frames_before=int(saved.get(FRAMES_KEY, 0)))
        self._last_trim = self._last_wake_step = time.monotonic()
        # Exactly-once (layer/delivery.py): the batches learned, saved with the weights; on once a batch carries a pass id.
        self.delivery = LayerDelivery(self.name, saved.get("delivery"))
        self.checkpoints = LayerCheckpoints(checkpoint_dir, index, self.layer, self.last_good, self.delivery, self.checkpoint_meta,
                                            lambda out: send(self.output, out, self.waiting), self.dropped)
        self._sent_ok = True  # whether the last micro-batch's activity was finite and went on
        self._deferred: list[wire.Message] = []  # controls that came while a step forwarded arrivals: handled after it
        self.phases = Phases()  # seconds per phase of the loop, published as busy_s
        self.stepper = Stepper(self.layer, self.phases, self.figures.record, lambda: self.last_good.roll_back(self.figures.frames))
        self.policy = policy(self)
        if held := self.checkpoints.restore_held(self.policy.pairing, self.device):
            self.log.info("resumed %d positive micro-batches held unstepped at the last barrier", held)
        self.last_good.remember()

    def make_layer(self, layer_config: LayerConfig) -> FFLayer:
        """The layer this worker owns, of the config's kind (dense, conv, local); a subclass may own another (see recurrent.py)."""
        return layer_of_kind(layer_config)

    def setup(self) -> None:
        # Before binding, so before the first frame can arrive (see await_peers): the first step's allocations and the thread pools'
        # set-up happen here, not while live frames queue. Changes nothing (FFLayer.warm_up); latency still counts
        # from each frame's own source timestamp.
        started = time.perf_counter()
        self.layer.warm_up(max(2, self.batching.learn_every_rows or self.batching.max_rows))
        self.log.info("warmed up in %.0f ms", (time.perf_counter() - started) * 1000)
        # The last-good copy now holds the optimiser's state too (Adam's two weight-sized moments, made by the warm-up):
        # allocated at start, not a checkpoint period later into a heap the steps have fragmented (RSS grew by 32+ MB then).
        self.last_good.remember()
        ep = self.endpoints
        # Downstream first: this layer binds its input (and the layer below or the source can start sending) only once
        # the next worker is up and warm, so the first frames of a live stream do not queue behind start-up.
        self.output = self.socket(zmq.PUSH, connect=ep.output, hwm=4, output=True, ready=True)
        self.outlet = Outlet(self.output, self.layer, self.wire_dtype, self.waiting, self.dropped, self.figures.recent["latency_ms"],
                             self._on_activity, self.index, self.features_layers)
        if ep.negative_output:
            sock = self.socket(zmq.PUSH, connect=ep.negative_output, hwm=8, output=True)
            self.stepper.chain = NegativeChain(sock, self.wire_dtype, self.name, lambda: self.stopping, self.dropped)
        self.await_peers(self.output)
        self.rewind = self.socket(zmq.PUSH, connect=self.rewind_addr, hwm=4, watch=False) if self.rewind_addr else None
        self.input = Receiver(self.socket(zmq.PULL, bind=ep.input, hwm=4), name=f"{self.name}.in")
        self.negative = Receiver(self.socket(zmq.PULL, bind=ep.negative, hwm=8), name=f"{self.name}.neg")
        self.snapshot = Receiver(self.socket(zmq.REP, bind=ep.snapshot), name=f"{self.name}.snap")
        self.inbox = NegativeInbox(self.negative, self.layer, self.device, self.phases, self.dropped, self.figures.record, self.policy,
                                   self.stepper.negatives_only)
        self.poller = zmq.Poller()
        for r in (self.input, self.negative, self.snapshot):
            self.poller.register(r.sock, zmq.POLLIN)

    # the loop --------------------------------------------------------------------------
    def step(self) -> None:
        with self.phases("wait"):
            ready = dict(self.poller.poll(POLL_MS))
        if self.snapshot.sock in ready:
            with self.phases("snapshot"):
                weights.answer_snapshot(self.snapshot, self.layer, self.name, self.index, self.dropped, lambda: self.stopping)
        if self.negative.sock in ready:
            self.inbox.take()
            self.inbox.drain(self.policy.negative_burst)
        if self.input.sock in ready:
            self._take_batch()
        elif time.monotonic() - self._last_wake_step > IDLE_WAKE_S:
            self.policy.idle()
            if self.layer.pending_count:
                self.stepper.negatives_only()  # the wake path is idle (a paused or phased source): sleep alone
        self.policy.tick()
        self.checkpoints.poll()
        while self._deferred:
            self._control(self._deferred.pop(0))
        self.checkpoints.periodic(self.checkpoint_every_s)
        if time.monotonic() - self._last_trim > TRIM_EVERY_S:
            # The steps' freed weight-sized buffers leave holes that glibc keeps resident; given back, only what the
            # next steps touch comes back (about 1 ms of page faults per 2 MB, so not every step).
            malloc.trim()
            self._last_trim = time.monotonic()

    # frames ----------------------------------------------------------------------------
    def _take_batch(self) -> None:
        for msg in self._forward_batch(self.policy.learn):
            self._control(msg)

    def forward_waiting(self) -> None:
        """Between the passes of a scheduled step: frames waiting at the input go on now, on the weights the step has
        not yet changed, and their rows are held (policy.hold), never stepped; a control waits for the step's end."""
        if self.input.sock.poll(0):
            self._deferred += self._forward_batch(self.policy.hold)

    def _forward_batch(self, take) -> list[wire.Message]:
        """One micro-batch from the input: eval rows forwarded, learn rows handed to `take`; returns its controls."""
        with self.phases("recv"):
            batch = gather(self.input, self.batching)
        data = [m for m in batch if m.kind in ("frames", "activity")]
        self.dropped["kind"] += sum(m.kind not in ("frames", "activity", "control", "barrier") for m in batch)
        for msg in [m for m in data if m.mode == "eval"]:
            self._forward_eval(msg)
        # In arrival order, runs of messages to learn and of messages only to forward (the layer above gates them too).
        for learns, messages in self.delivery.runs([m for m in data if m.mode == "learn"]):
            self._learn(messages, take) if learns else self._forward_only(messages)
        if (notice := self.delivery.take_notice()) is not None and (self.rewind is None or not try_send(self.rewind, notice)):
            self.dropped["gap_notice_not_sent"] += 1  # the next barrier reports the gap instead
        return [m for m in batch if m.kind in ("control", "barrier")]

    def _forward_only(self, messages: list[wire.Message]) -> None:
        """Learn messages this layer does not learn from: their activity still goes on, so the layers above (each
        with its own SeqGate) and the sink stay in line."""
        kept = [(m, x) for m in messages if (x := self._inputs(m, eval_mode=False)) is not None]
        if not kept:
            return
        with torch.no_grad(), self.phases("forward"):
            h = self.layer(torch.cat([x for _, x in kept]))
        with self.phases("send"):
            self.outlet.activity(kept, h)

    def _inputs(self, msg: wire.Message, eval_mode: bool) -> torch.Tensor | None:
        """The message's rows as this layer's input (B, D); None (and counted) when they do not fit."""
        return self.labels.inputs(msg, eval_mode, self.dropped)

    def _forward_eval(self, msg: wire.Message) -> None:
        """Forward only, no update; the sink reads every layer's readout features, so they are carried along."""
        x = self._inputs(msg, eval_mode=True)
        if x is None:
            return
        with torch.no_grad():
            h = self.layer(x)
        self.figures.eval_frames += self.outlet.eval(msg, h)

    def _learn(self, messages: list[wire.Message], take) -> None:
        """A learn micro-batch: one optimiser step on all its rows, now or later, as `take` (the policy) decides."""
        kept = [(m, x) for m in messages if (x := self._inputs(m, eval_mode=False)) is not None]
        if not kept:
            return
        x = torch.cat([x for _, x in kept])  # (B, D): one micro-batch, one optimiser step
        self.last_good.decay_lr(self.figures.frames)
        labels = self.labels.targets([m for m, _ in kept], self.dropped) if self.layer.needs_labels else None
        if self.layer.needs_labels and labels is None:
            return
        self.delivery.learned([m for m, _ in kept], [len(xi) for _, xi in kept])
        # The activity goes on before any backward pass.
        stats = take(x, labels, [m.seq for m, _ in kept], lambda h: self._send_activity(kept, h))
        self._last_wake_step = time.monotonic()
        if not self._sent_ok:
            return
        self.figures.learned(len(x), stats)
        if self.max_frames is not None and self.figures.frames >= self.max_frames:
            self.finished = True

    def _send_activity(self, kept: list[tuple[wire.Message, torch.Tensor]], h: torch.Tensor) -> None:
        with self.phases("send"):
            self._sent_ok = self.outlet.activity(kept, h)

    def _on_activity(self, messages: list[wire.Message], h: torch.Tensor, act: np.ndarray) -> None:
        """Called with each forward pass's raw activity h (B, N) and normalised act, rows in message order; a hook."""

    def _control(self, msg: wire.Message) -> None:
        if msg.kind == "barrier":
            with self.phases("barrier"):  # busy_s: what barriers cost this layer (waiting for negatives, the copy)
                self._barrier(msg)
        elif msg.extra.get("command") == "end":
            self.checkpoints.settle()
            self.policy.before_end()
            send(self.output, msg, lambda: self.stopping, timeout_ms=5000)
            if self.exit_on_end:
                self.finished = True

    def _barrier(self, msg: wire.Message) -> None:
        """Checkpoint (weights, optimiser, what was learned, the rows held for their negatives; checkpoints.py), then pass
        the barrier on, saying whether this layer has learned every batch before it (if not, the source rewinds and replays)."""
        self.checkpoints.barrier(self.delivery.barrier_reply(msg, self.index), self.policy.pairing)

    # ending, checkpoints -----------------------------------------------------------------
    def drain(self) -> None:
        self.policy.drain()
        if self.layer.pending_count:
            self.stepper.negatives_only()

    def on_close(self) -> None:
        if self.checkpoint_dir:
            self.checkpoints.save()
        self.delivery.close()


    # figures -----------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        return super().metrics() | dict(
            layer=self.index, **self.figures.metrics(), updates=self.updates, negative_updates=self.negatives, **self.policy.metrics(),
            threshold=self.layer.cfg.theta, weights_version=self.layer.version, rollbacks=self.last_good.rollbacks,
            lr_factor=self.last_good.lr_factor, busy_s=self.phases.get(), dropped=self.dropped_total(), **self.delivery.metrics())

    def maybe_publish_metrics(self) -> None:
        super().maybe_publish_metrics()
        if self.preview and self.metrics_addr and (msg := self.preview.due()) is not None:
            self.publish_to_monitor(msg)

    def dropped_total(self) -> int:
        receivers = [getattr(self, name, None) for name in ("input", "negative", "snapshot")]
        return sum(self.dropped.values()) + sum(sum(r.rejected.values()) for r in receivers if r is not None)

    @property
    def updates(self) -> int:
        return self.stepper.updates

    @property
    def negatives(self) -> int:
        return self.inbox.taken if hasattr(self, "inbox") else 0

    def __repr__(self) -> str:
        c = self.layer.cfg
        return f"<LayerWorker {self.index} {c.in_features}->{c.width} frames={self.figures.frames} updates={self.updates} v={self.layer.version}>"

