"""Layer worker: owns one FF layer, passes activity up at once, and steps on each positive micro-batch with its negatives."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
import zmq

from ffstream.config.plans import LIVE_MAX_HELD, Batching, LayerEndpoints
from ffstream.ff import (
    FFLayer,
    LayerConfig,
    checkpoint,
    embed_label,
    linear_decay,
    neutral_label,
)
from ffstream.ff.spec import make_layer as layer_of_kind
from ffstream.monitor import preview
from ffstream.net import wire
from ffstream.net.transport import POLL_MS, Receiver, send
from ffstream.workers import malloc
from ffstream.workers.base import Worker
from ffstream.workers.pairing import Pairing, merged
from ffstream.workers.stats import Ema, Mean, Phases, Rate

# Negatives join the next positive step, as in the interleaved reference: a step on negatives alone
# flips the sign of the update and measurably hurts. Only when the wake path has been idle this long,
# or this many negative batches wait, does a layer step on negatives alone.
IDLE_WAKE_S = 1.0
MAX_PENDING_NEGATIVES = 8
PREVIEW_EVERY_S = 3.0  # seconds between weight previews (layer 1 only, for the web dashboard's receptive fields)
END_PAIRING_WAIT_S = 2.0  # at the end of a stream, how long held rows wait for their negatives before the end goes on
TRIM_EVERY_S = 10.0  # seconds between malloc_trim calls: RSS follows the heap's use, not its high-water mark (ffstream/malloc.py)


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
        lr_decay_frames: int | None = None,  # decay the learning rate linearly to 0 over this many frames; None: constant
        pair_negatives: bool = False,  # hold each positive step until the sleep worker's negatives for the same frames arrive
        negatives_alone: bool = False,  # phased sleep: each negative batch is a step of its own, on arrival
        batching: Batching = Batching(),
        checkpoint_dir: str | None = None,
        checkpoint_every_s: float = 60.0,
        max_frames: int | None = None,  # stop after this many learned rows
        exit_on_end: bool = False,  # stop once the end-of-stream marker has passed (in-process tests); else wait for stop()
        device: str = "cpu",  # torch device of the weights: cpu, cuda, cuda:N
        wire_dtype: str = "float32",  # dtype of the activity sent on: "float32" or "float16" (half the bytes; computed in float32)
        checkpoint_meta: dict | None = None,  # saved with each checkpoint, e.g. the frame shape, for `ffstream eval`
        preview_shape: tuple[int, int, int] | None = None,  # the input frame (C, H, W): send weight previews to the monitor; None: none
        **worker_kwargs: Any,
    ):
        super().__init__(f"layer{index}", **worker_kwargs)
        self.index = index
        self.endpoints = endpoints
        self.num_classes = num_classes
        self.label_scale = label_scale
        self.label_relative = label_relative
        self.lr_decay_frames = lr_decay_frames
        # forward_first and scheduled learning hold more positives, so that learning catches up on larger merged steps
        live = batching.forward_first or batching.scheduled
        self.pairing = (Pairing(max_held=LIVE_MAX_HELD) if live else Pairing()) if pair_negatives else None
        if batching.scheduled and not pair_negatives:
            raise ValueError("scheduled learning (learn_every_rows / learn_every_ms) needs paired negatives")
        self.scheduled = batching.scheduled
        self._stepping = False  # inside _step: frames that arrive are forwarded between its passes, never stepped
        self._last_learn = time.monotonic()  # when the last scheduled step ended
        self.negatives_alone = negatives_alone
        self.batching = batching
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every_s = checkpoint_every_s
        self.max_frames = max_frames
        self.exit_on_end = exit_on_end
        self.device = torch.device(device)
        self.wire_dtype = wire.DTYPES[wire_dtype] if wire_dtype in wire.FLOAT_DTYPES else None
        if self.wire_dtype is None:
            raise ValueError(f"wire_dtype must be one of {wire.FLOAT_DTYPES}, got {wire_dtype!r}")
        self.checkpoint_meta = {"index": index, "num_classes": num_classes, "label_scale": label_scale, "label_relative": label_relative, **(checkpoint_meta or {})}
        self.layer = self.make_layer(layer_config).to(self.device)
        self.preview_shape = preview_shape
        self._last_preview: float | None = None
        self.frames = 0
        self.eval_frames = 0
        self.updates = 0
        self.negatives = 0
        self.fps = Rate(time.monotonic)
        self.recent = {k: Ema(0.05) for k in ("goodness_pos", "p_pos", "goodness_neg", "p_neg", "latency_ms", "staleness")}
        self.whole_run = {k: Mean() for k in ("goodness_pos", "p_pos", "goodness_neg", "p_neg", "staleness")}
        self._last_checkpoint = time.monotonic()
        self._last_trim = time.monotonic()
        self._last_wake_step = time.monotonic()
        if checkpoint_dir and checkpoint.layer_path(checkpoint_dir, index).exists():
            version = checkpoint.load_layer(checkpoint.layer_path(checkpoint_dir, index), self.layer)
            self.log.info("resumed from %s at version %d", checkpoint.layer_path(checkpoint_dir, index), version)
        self._sent_ok = True  # whether the last micro-batch's activity was finite and went on
        self.phases = Phases()  # seconds per phase of the loop, published as busy_s
        self.rollbacks = 0  # steps that left non-finite weights and were undone
        self.lr_factor = 1.0  # halved at each rollback
        self._remember()

    def make_layer(self, layer_config: LayerConfig) -> FFLayer:
        """The layer this worker owns, of the config's kind (dense, conv, local); a subclass may own another (see recurrent_layer.py)."""
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
        self._remember()
        ep = self.endpoints
        # Downstream first: this layer binds its input (and the layer below or the source can start sending) only once
        # the next worker is up and warm, so the first frames of a live stream do not queue behind start-up.
        self.output = self.socket(zmq.PUSH, connect=ep.output, hwm=4, output=True, ready=True)
        self.negative_output = self.socket(zmq.PUSH, connect=ep.negative_output, hwm=8, output=True) if ep.negative_output else None
        self.await_peers(self.output)
        self.input = Receiver(self.socket(zmq.PULL, bind=ep.input, hwm=4), name=f"{self.name}.in")
        self.negative = Receiver(self.socket(zmq.PULL, bind=ep.negative, hwm=8), name=f"{self.name}.neg")
        self.snapshot = Receiver(self.socket(zmq.REP, bind=ep.snapshot), name=f"{self.name}.snap")
        self.poller = zmq.Poller()
        for r in (self.input, self.negative, self.snapshot):
            self.poller.register(r.sock, zmq.POLLIN)

    # the loop --------------------------------------------------------------------------
    def step(self) -> None:
        with self.phases("wait"):
            ready = dict(self.poller.poll(POLL_MS))
        if self.snapshot.sock in ready:
            with self.phases("snapshot"):
                self._answer_snapshot()
        if self.negative.sock in ready:
            with self.phases("negatives"):
                self._take_negative()
            if self.scheduled:
                self._drain_negatives(LIVE_MAX_HELD)  # a layer below sends a step's negatives in a burst: take them all
        if self.input.sock in ready:
            self._take_batch()
        elif time.monotonic() - self._last_wake_step > IDLE_WAKE_S:
            if self.pairing is not None and not self.scheduled:
                self._step_paired()  # let nothing wait past its deadline (scheduled: _learn_if_due below, on its schedule)
            if self.layer.pending_count:
                self._step_negatives_only()  # the wake path is idle (a paused or phased source): sleep alone
        if self.scheduled:
            self._learn_if_due()
        if time.monotonic() - self._last_checkpoint > self.checkpoint_every_s:
            self.save() if self.checkpoint_dir else self._remember()
        if time.monotonic() - self._last_trim > TRIM_EVERY_S:
            # The steps' freed weight-sized buffers leave holes that glibc keeps resident; given back, only what the
            # next steps touch comes back (about 1 ms of page faults per 2 MB, so not every step).
            malloc.trim()
            self._last_trim = time.monotonic()

    def _answer_snapshot(self) -> None:
        request = self.snapshot.recv_ready()
        if request is None or request.kind != "snapshot_request":
            # REP must answer every request, even a bad one, or the socket locks up.
            self.dropped["bad_snapshot_request"] += request is not None
            reply = wire.Message("control", np.zeros(0, np.float32), stream=self.name, extra={"command": "error"})
        else:
            tensors = {k: v.cpu().numpy() for k, v in self.layer.weights().items()}
            flat, layout = wire.pack_tensors(tensors)
            extra = {"version": self.layer.version, "tensors": layout, "layer": self.index}
            reply = wire.Message("snapshot", flat, stream=self.name, extra=extra)
        send(self.snapshot.sock, reply, lambda: self.stopping, timeout_ms=1000)

    def _take_negative(self) -> None:
        msg = self.negative.recv_ready()
        if msg is None:
            return
        try:
            if msg.kind != "negative_update":
                raise wire.WireError("kind", f"{msg.kind} on the negative socket")
            # A chained negative (from the layer below, sleep.route "chain") has no snapshot version: staleness 0.
            version = msg.extra.get("version")
            version = None if version is None else int(version)  # OverflowError: JSON allows Infinity
            if msg.extra.get("form") == "gradient":
                self._queue_negative_gradient(msg)
            else:
                self._queue_negative_inputs(msg)
        except (wire.WireError, TypeError, ValueError, OverflowError) as exc:
            self.dropped[getattr(exc, "reason", "negative_update")] += 1
            return
        self.negatives += 1
        staleness = 0 if version is None else max(0, self.layer.version - version)
        self.recent["staleness"].add(staleness)
        self.whole_run["staleness"].add(staleness)
        if self.layer.pending_count >= MAX_PENDING_NEGATIVES and not self._stepping:
            self._step_negatives_only()

    def _drain_negatives(self, most: int = 16) -> None:
        """Take the negatives that are already here, so that a positive arriving with them can step at once."""
        for _ in range(most):
            if not self.negative.sock.poll(0):
                return
            with self.phases("negatives"):
                self._take_negative()

    def _queue_negative_inputs(self, msg: wire.Message) -> None:
        x = np.asarray(msg.array)
        if x.ndim != 2 or x.shape[1] != self.layer.input_width or msg.extra.get("form") != "inputs":
            raise wire.WireError("negative_shape", f"negative inputs of shape {x.shape}, expected (B, {self.layer.input_width})")
        inputs = torch.from_numpy(x.astype(np.float32)).to(self.device)
        if self.pairing is None:
            self.layer.add_negative_inputs(inputs)
            if self.negatives_alone:
                self._step_negatives_only()
        else:
            self.pairing.add_negative(msg.seq, inputs)
            if not self.scheduled:  # scheduled: the loop decides when to step (_learn_if_due)
                self._step_paired()

    def _learn_if_due(self) -> None:
        """Scheduled learning: one step on every ready row once learn_every_rows are ready, or learn_every_ms
        after the last step; frames waiting at the input are forwarded first (unless half of max_held waits)."""
        if self._stepping:
            return
        pairing, b = self.pairing, self.batching
        if self.input.sock.poll(0) and len(pairing.held) < pairing.max_held // 2:
            return
        rows = pairing.ready_rows()
        since_ms = (time.monotonic() - self._last_learn) * 1000
        if rows and ((b.learn_every_rows and rows >= b.learn_every_rows) or (b.learn_every_ms and since_ms >= b.learn_every_ms)):
            self._step_paired()
        else:
            self._step_expired()

    def _step_paired(self) -> None:
        """Step every held positive whose negatives are in, then what waited too long, alone.

        With batching.forward_first or scheduled learning, those ready at once make one step: learning
        catches up on a larger batch instead of queueing steps.
        """
        ready = self.pairing.ready_by_seq()
        groups = [ready] if ready and (self.batching.forward_first or self.scheduled) else [[pair] for pair in ready]
        for group in groups:
            positives, labels = merged([held for held, _ in group])
            with self.phases("learn"):
                self._step(positives, [n for _, negatives in group for n in negatives], labels)
        if ready:
            self._last_learn = time.monotonic()
        self._step_expired()

    def _step_expired(self) -> None:
        late_positives, orphan_negatives = self.pairing.expired()
        for inputs in orphan_negatives:
            self.layer.add_negative_inputs(inputs)  # joins the next step
        for held in late_positives:
            with self.phases("learn"):
                self._step(held.inputs, [], held.labels)

    def _step(self, positives: torch.Tensor, negatives: list[tuple[int, torch.Tensor]], labels: torch.Tensor | None = None,
              on_forward=None) -> tuple[dict, torch.Tensor]:
        """One optimiser step on positives (B, D) and the negatives of the same frames, both judged by the weights
        of this moment, as in the interleaved reference; returns the positive stats and h.

        The negatives go first, so that with a chained sleep (route "chain") their activity reaches the next
        layer before the positives' does, and it can step at once too.
        """
        self._stepping = True
        try:
            if negatives:
                # One pass over both batches (as the reference's step): the negatives' mean loss weighs as much as
                # the positives', and their activity is handed on first.
                chain = (lambda h: self._chain_negatives(negatives, h)) if self.negative_output is not None else None
                grads, stats, neg_stats, h, _ = self.layer.paired_gradients(
                    positives, torch.cat([n for _, n in negatives]), labels,
                    on_negative_forward=self._then_arrivals(chain), on_positive_forward=self._then_arrivals(on_forward))
                self.layer.last_negative_stats = neg_stats
            else:
                grads, stats, h = self.layer.wake(positives, labels, on_forward=self._then_arrivals(on_forward))
            self._forward_arrivals()
            self._apply(grads)
        finally:
            self._stepping = False
        return stats, h

    def _then_arrivals(self, on_forward):
        """Scheduled learning: on_forward, then the frames that arrived meanwhile, between a pass's forward and backward halves."""
        if not self.scheduled:
            return on_forward

        def then(h: torch.Tensor) -> None:
            if on_forward is not None:
                on_forward(h)
            self._forward_arrivals()
        return then

    def _forward_arrivals(self) -> None:
        """Scheduled learning: frames that arrived during a step go on now, between its passes, on the weights
        the step has not yet changed; their rows are held for a later step. Forwarding never waits a whole step."""
        if self.scheduled and self.input.sock.poll(0):
            self._take_batch()

    def _chain_negatives(self, negatives: list[tuple[int, torch.Tensor]], h: torch.Tensor) -> None:
        """Send the next layer its negative inputs: this layer's normalised activity on the negatives, per source batch.

        Flat rows (B, D), as the sleep worker sends them: a spatial layer's (B, C, H, W) map was refused as a bad shape.
        """
        act = self.layer.normalize(h).flatten(1).cpu().numpy()
        if not np.isfinite(act).all():
            self.dropped["non_finite_negative"] += len(negatives)
            return
        act = act.astype(self.wire_dtype, copy=False)
        start = 0
        for seq, x in negatives:
            rows = act[start : start + len(x)]
            start += len(x)
            update = wire.Message("negative_update", rows, stream=self.name, seq=seq, extra={"form": "inputs", "rows": len(rows)})
            if not send(self.negative_output, update, lambda: self.stopping, timeout_ms=1000):
                self.dropped["negative_not_sent"] += 1

    def _apply(self, grads) -> None:
        self.layer.apply_gradients(grads)
        # A NaN or inf anywhere makes the sum non-finite, so one reduction tells: 0.2 ms on a 2000x2000 weight
        # against 9.5 ms for isfinite(w).all() (which builds a 4M-element mask), a quarter of a batch-64 step.
        if not all(bool(torch.isfinite(t.sum())) for t in self.layer.weights().values()):
            self._roll_back()
            return
        self.updates += 1
        self._after_step()

    def _remember(self) -> None:
        """The last good state, in memory: what the last checkpoint holds, or would hold without a checkpoint dir."""
        # Into the previous copy's tensors where shapes match: a fresh weight-sized copy every period
        # fragments the heap (RSS creeps up over minutes); an in-place copy reuses the same memory.
        old = getattr(self, "_good", None) or (None, None)
        self._good = (_copy_into(old[0], self.layer.state_dict()), _copy_into(old[1], self.layer.optimizer.state_dict()))
        self._last_checkpoint = time.monotonic()

    def _roll_back(self) -> None:
        """Divergence: weights went non-finite. Back to the last good state, at half the learning rate."""
        weights, optimizer = self._good
        self.layer.load_state_dict(weights)
        self.layer.optimizer.load_state_dict(copy.deepcopy(optimizer))  # Adam's moments may be non-finite too
        self.rollbacks += 1
        self.lr_factor *= 0.5
        self.layer.set_lr_scale(self.lr_factor * (linear_decay(self.frames, self.lr_decay_frames) if self.lr_decay_frames else 1.0))
        self.log.warning("non-finite weights: rolled back to version %d, learning rate x%g (rollback %d)",
                         self.layer.version, self.lr_factor, self.rollbacks)

    def _queue_negative_gradient(self, msg: wire.Message) -> None:
        parts = wire.unpack_tensors(msg.array, msg.extra.get("tensors"))
        # One tensor per parameter, as `Gradients`; a snapshot's `weights()` may carry more (batch-norm statistics).
        params = dict(self.layer.named_parameters())
        expected = {k: tuple(p.shape) for k, p in params.items()}
        if {k: tuple(v.shape) for k, v in parts.items()} != expected:
            raise wire.WireError("negative_shape", f"negative update shapes do not match {expected}")
        self.layer.add_negative([torch.from_numpy(parts[k].copy()).to(self.device) for k in params])
        for key in ("goodness_neg", "p_neg"):
            if isinstance(msg.extra.get(key), (int, float)):
                self._record_negative({key: msg.extra[key]}, int(msg.extra.get("rows", 1)))

    def _record_negative(self, figures: dict, rows: int) -> None:
        for key, value in figures.items():
            self.recent[key].add(value)
            self.whole_run[key].add(value, rows)

    def _after_step(self) -> None:
        """Negatives given as inputs are judged at the step: record how the current weights saw them."""
        stats = self.layer.last_negative_stats
        if stats is not None:
            self._record_negative({"goodness_neg": stats["goodness"], "p_neg": stats["p"]}, 1)
            self.layer.last_negative_stats = None

    def _step_negatives_only(self) -> None:
        self._apply(None)

    def _gather(self) -> list[wire.Message]:
        """A micro-batch: the ready message, plus more up to max_rows, waiting at most max_wait_ms."""
        first = self.input.recv_ready()
        batch = [first] if first is not None else []
        rows = _rows(first) if first is not None else 0
        deadline = time.monotonic() + self.batching.max_wait_ms / 1000
        while rows < self.batching.max_rows and not (batch and batch[-1].kind == "control"):
            wait_ms = max(0.0, (deadline - time.monotonic()) * 1000)
            msg = self.input.recv(int(wait_ms))
            if msg is None:
                if not self.input.sock.poll(0):
                    break
                continue
            batch.append(msg)
            rows += _rows(msg) if msg.kind != "control" else 0
        return batch

    def _take_batch(self) -> None:
        with self.phases("recv"):
            batch = self._gather()
        data = [m for m in batch if m.kind in ("frames", "activity")]
        bad = [m for m in batch if m.kind not in ("frames", "activity", "control")]
        self.dropped["kind"] += len(bad)
        for msg in [m for m in data if m.mode == "eval"]:
            self._forward_eval(msg)
        learn = [m for m in data if m.mode == "learn"]
        if learn:
            self._learn(learn)
        for msg in [m for m in batch if m.kind == "control"]:
            self._control(msg)

    def _inputs(self, msg: wire.Message, eval_mode: bool) -> torch.Tensor | None:
        """The message's rows as this layer's input (B, D); None (and counted) when they do not fit."""
        array, blocks = np.asarray(msg.array), msg.extra.get("blocks")
        if blocks:
            if not _blocks_fit(blocks, array, self.layer.cfg.in_features):
                self.dropped["blocks"] += 1
                return None
            x = array[:, -self.layer.cfg.in_features :]  # eval: the last block is from the layer below
        else:
            x = array.reshape(len(array), -1) if array.ndim and array.size else array
        if x.ndim != 2 or x.shape[1] != self.layer.cfg.in_features or len(x) == 0:
            self.dropped["input_shape"] += 1
            return None
        x = torch.from_numpy(x.astype(np.float32, copy=False)).to(self.device)
        if self.num_classes:
            if eval_mode:
                return neutral_label(x, self.num_classes, self.label_scale, self.label_relative)
            if msg.label is None or max(msg.label, default=0) >= self.num_classes:
                self.dropped["label"] += 1
                return None
            return embed_label(x, torch.tensor(msg.label, device=self.device), self.num_classes, self.label_scale, self.label_relative)
        return x

    def _forward_eval(self, msg: wire.Message) -> None:
        """Forward only, no update; the sink reads every layer's readout features, so they are carried along."""
        x = self._inputs(msg, eval_mode=True)
        if x is None:
            return
        with torch.no_grad():
            h = self.layer(x)
        # Blocks, all flat: the readout features of every layer so far, then this layer's activity, the next one's input
        # (which replaces the activity of the layer below: the sink reads features, and only the next layer reads activity).
        act = self.layer.normalize(h).flatten(1).cpu().numpy()  # (B, N)
        self._on_activity([msg], h, act)
        features = self.layer.features(h).cpu().numpy()  # (B, F): the activity itself (dense), or a pooled map (spatial)
        blocks = list(msg.extra.get("blocks") or [])
        carried = np.asarray(msg.array)[:, : -blocks[-1]] if blocks else np.zeros((len(act), 0), np.float32)
        out = np.concatenate([carried, features, act], axis=1).astype(self.wire_dtype, copy=False)
        blocks = blocks[:-1] + [features.shape[1], act.shape[1]]
        trace = (msg.trace or []) + [[round(float(v), 4) for v in self.layer.goodness(h)]]
        self.eval_frames += len(act)
        self._send_on(msg, out, trace, {**msg.extra, "blocks": blocks})

    def _learn(self, messages: list[wire.Message]) -> None:
        inputs = [self._inputs(m, eval_mode=False) for m in messages]
        kept = [(m, x) for m, x in zip(messages, inputs) if x is not None]
        if not kept:
            return
        x = torch.cat([x for _, x in kept])  # (B, D): one micro-batch, one optimiser step
        if self.lr_decay_frames:
            self.layer.set_lr_scale(self.lr_factor * linear_decay(self.frames, self.lr_decay_frames))
        labels = None
        if self.layer.needs_labels:
            if any(m.label is None for m, _ in kept):
                self.dropped["label"] += len(kept)
                return
            labels = torch.tensor([c for m, _ in kept for c in m.label], device=self.device)
        pass_on = lambda h: self._pass_on(kept, h)  # noqa: E731  the activity goes on before any backward pass
        busy = False
        if self.pairing is not None:
            self._drain_negatives()  # negatives sent just before these positives join this step
            # More frames waiting: forward them first and learn when the input is idle, on the merged batches
            # (bounded: past half of max_held the layer steps whatever it can, even with frames waiting).
            busy = self.batching.forward_first and bool(self.input.sock.poll(0)) and len(self.pairing.held) < self.pairing.max_held // 2
            busy = busy or self.scheduled  # scheduled: every frame is forwarded and held; _learn_if_due steps
        negatives = self.pairing.take_if_ready([m.seq for m, _ in kept]) if self.pairing is not None and not busy else None
        if self.pairing is None or negatives is not None:
            # One forward pass serves the activity sent on and this step's gradient (the negatives, if any,
            # are those of the same frames, already here: the step is the interleaved reference's).
            with self.phases("learn"):
                stats, h = self._step(x, negatives or [], labels, on_forward=pass_on)
        else:
            # The activity goes on now; the step waits for the negatives of these frames (see pairing.py).
            with self.phases("forward"), torch.no_grad():
                h = self.layer(x)
            pass_on(h)
            goodness = self.layer.goodness(h)
            stats = {"goodness": float(goodness.mean()), "p": float(self.layer.probability(goodness).mean())}
            self.pairing.add_positive([m.seq for m, _ in kept], x, labels)
        self._last_wake_step = time.monotonic()
        if self.pairing is not None and not busy:
            self._step_paired()  # after the activity has gone on: forwarding never waits behind learning
        if not self._sent_ok:
            return
        self.frames += len(x)
        self.fps.add(len(x))
        for key, value in (("goodness_pos", stats["goodness"]), ("p_pos", stats["p"])):
            self.recent[key].add(value)
            self.whole_run[key].add(value, len(x))
        if self.max_frames is not None and self.frames >= self.max_frames:
            self.finished = True

    def _pass_on(self, kept: list[tuple[wire.Message, torch.Tensor]], h: torch.Tensor) -> None:
        """Send the normalised activity h: (B, N) of a micro-batch on, one message per message received."""
        with self.phases("send"):
            self._send_activity(kept, h)

    def _send_activity(self, kept: list[tuple[wire.Message, torch.Tensor]], h: torch.Tensor) -> None:
        g = self.layer.goodness(h)
        act = self.layer.normalize(h).cpu().numpy()  # normalised activity: well inside float16's range
        self._sent_ok = bool(np.isfinite(act).all())
        if not self._sent_ok:  # the weights were non-finite: rolled back at the step, and nothing is sent on
            self.dropped["non_finite_activity"] += len(kept)
            return
        self._on_activity([m for m, _ in kept], h, act)
        act = act.astype(self.wire_dtype, copy=False)
        start = 0
        for msg, xi in kept:
            rows = slice(start, start + len(xi))
            start += len(xi)
            trace = (msg.trace or []) + [[round(float(v), 4) for v in g[rows]]]
            self.recent["latency_ms"].add((time.time() - msg.t_src) * 1000)
            self._send_on(msg, act[rows], trace, msg.extra)

    def _on_activity(self, messages: list[wire.Message], h: torch.Tensor, act: np.ndarray) -> None:
        """Called with each forward pass's raw activity h (B, N) and normalised act, rows in message order; a hook."""

    def _send_on(self, msg: wire.Message, array: np.ndarray, trace: list, extra: dict) -> None:
        out = wire.Message(
            "activity", array, stream=msg.stream, seq=msg.seq, t_src=msg.t_src, label=msg.label, mode=msg.mode, trace=trace, extra=extra
        )
        if not send(self.output, out, lambda: self.stopping):
            self.dropped["not_sent"] += 1

    def _control(self, msg: wire.Message) -> None:
        if msg.extra.get("command") == "end":
            if self.pairing is not None:
                self._step_before_end()
            send(self.output, msg, lambda: self.stopping, timeout_ms=5000)
            if self.exit_on_end:
                self.finished = True

    # ending ------------------------------------------------------------------------------
    def _step_before_end(self) -> None:
        """Step the held rows with their negatives before the end goes on, so that the layer above gets their
        chained negatives before its own end (else it steps those rows alone at its drain). Negatives made
        from the last frames may still be on their way: wait for them, END_PAIRING_WAIT_S at most."""
        deadline = time.monotonic() + END_PAIRING_WAIT_S
        while self.pairing.ready_rows() < self.pairing.held_rows():
            left_ms = (deadline - time.monotonic()) * 1000
            if left_ms <= 0 or self.stopping:
                break
            if self.negative.sock.poll(min(POLL_MS, left_ms)):
                self._drain_negatives(LIVE_MAX_HELD)
        self._step_paired()

    def drain(self) -> None:
        if self.pairing is not None:
            self._step_paired()  # what has its negatives steps paired; the rest alone
            held = self.pairing.held
            steps = [merged(held)] if held and (self.batching.forward_first or self.scheduled) else [merged([h]) for h in held]
            for inputs, labels in steps:  # forward_first and scheduled learning take one merged step, as they always do
                with self.phases("learn"):
                    self._step(inputs, [], labels)
            self.pairing.held.clear()
        if self.layer.pending_count:
            self._step_negatives_only()

    def on_close(self) -> None:
        if self.checkpoint_dir:
            self.save()

    def save(self) -> None:
        path = checkpoint.layer_path(self.checkpoint_dir, self.index)
        checkpoint.save_layer(path, self.layer, self.checkpoint_meta)
        self._remember()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(
            layer=self.index,
            frames=self.frames,
            eval_frames=self.eval_frames,
            updates=self.updates,
            negative_updates=self.negatives,
            paired=self.pairing.paired if self.pairing else None,
            unpaired_positives=self.pairing.unpaired_positives if self.pairing else None,
            unpaired_negatives=self.pairing.unpaired_negatives if self.pairing else None,
            fps=self.fps.get(),
            threshold=self.layer.cfg.theta,
            weights_version=self.layer.version,
            rollbacks=self.rollbacks,
            lr_factor=self.lr_factor,
            busy_s=self.phases.get(),
            dropped=self.dropped_total(),
            **{k: v.get() for k, v in self.recent.items()},
            **{f"{k}_mean": v.get() for k, v in self.whole_run.items()},
        )
        return m

    def maybe_publish_metrics(self) -> None:
        super().maybe_publish_metrics()
        now = time.monotonic()
        if self.preview_shape and self.metrics_addr and (self._last_preview is None or now - self._last_preview >= PREVIEW_EVERY_S):
            self._last_preview = now
            self.publish_preview()

    def publish_preview(self) -> None:
        """The first units' weights as image tiles (N, H, W[, 3]) uint8: what the dashboard draws as receptive fields."""
        with torch.no_grad():
            filters = self.layer.filters(self.preview_shape)[: preview.MAX_TILES].float().cpu()  # (n, C, h, w): frames, or conv kernels
        try:
            tiles = preview.weight_tiles(filters.flatten(1).numpy(), tuple(filters.shape[1:]))
        except ValueError as exc:  # the input is not this frame shape: say so once, then send none
            self.log.warning("no weight previews: %s", exc)
            self.preview_shape = None
            return
        extra = {"layer": self.index, "weights_version": self.layer.version, "units": self.layer.cfg.width}
        self.publish_to_monitor(wire.Message("preview", tiles, stream=self.name, extra=extra))

    def dropped_total(self) -> int:
        receivers = [getattr(self, name, None) for name in ("input", "negative", "snapshot")]
        return sum(self.dropped.values()) + sum(sum(r.rejected.values()) for r in receivers if r is not None)

    def __repr__(self) -> str:
        c = self.layer.cfg
        return f"<LayerWorker {self.index} {c.in_features}->{c.width} frames={self.frames} updates={self.updates} v={self.layer.version}>"


def _copy_into(old: Any, new: Any) -> Any:
    """A deep copy of `new` (nested dicts and lists of tensors and values) that reuses old's tensors where they fit."""
    if isinstance(new, torch.Tensor):
        if isinstance(old, torch.Tensor) and old.shape == new.shape and old.dtype == new.dtype and old.device == new.device:
            return old.copy_(new)
        return new.detach().clone()
    if isinstance(new, dict):
        return type(new)((k, _copy_into(old.get(k) if isinstance(old, dict) else None, v)) for k, v in new.items())
    if isinstance(new, (list, tuple)):
        olds = old if isinstance(old, (list, tuple)) and len(old) == len(new) else [None] * len(new)
        return type(new)(_copy_into(o, v) for o, v in zip(olds, new))
    return copy.deepcopy(new)


def _rows(msg: wire.Message) -> int:
    """Rows of a data message; a 0-d array (wire-valid, useless here) has none and is refused in _inputs."""
    return msg.array.shape[0] if msg.array.ndim else 0


def _blocks_fit(blocks: object, array: np.ndarray, in_features: int) -> bool:
    """An eval message's "blocks": the widths of the layers below, the last one this layer's input."""
    return (
        isinstance(blocks, list)
        and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in blocks)
        and array.ndim == 2
        and sum(blocks) == array.shape[1]
        and blocks[-1] == in_features
    )
