"""Sleep worker: makes negative data offline and runs the negative pass on snapshots of the layers.

It keeps a bounded reservoir of raw frames (data, never activations), pulls a
versioned snapshot of every layer every `sleep_every` wake batches, and sends
each layer the gradient of its own negative loss, tagged with the snapshot's
version so the layer can measure staleness.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import zmq

from ffstream.config.plans import SleepPlan
from ffstream.ff import LayerConfig, LinearReadout
from ffstream.ff.dreamer import PAIRED_KINDS, UNLABELLED_KINDS, Dreamer
from ffstream.ff.stack import FFStack
from ffstream.monitor.stats import Ema, Mean, Phases, Rate
from ffstream.net import wire
from ffstream.net.transport import POLL_MS, Receiver, make_socket, send
from ffstream.workers.base import Worker


class SleepWorker(Worker):
    kind = "sleep"
    wake_steps_per_batch = 1  # layer steps each source batch makes (a recurrent image: one per iteration)

    def __init__(
        self,
        frames_addr: str,  # SUB, connected: the source's raw frames
        snapshot_addrs: list[str],  # REQ, connected: each layer's snapshot socket, bottom up (then the sink's, see head_addr)
        negative_addrs: list[str],  # PUSH, connected: each layer's negative-update socket
        layer_configs: list[LayerConfig],
        *,
        plan: SleepPlan = SleepPlan(),
        num_classes: int | None = None,  # labelled stream: wrong-label negatives
        label_scale: float = 1.0,  # value of the label slot, as layer 1 writes it
        label_relative: bool = False,  # and whether it is relative to each frame's RMS, as layer 1 writes it
        seed: int = 0,
        head_addr: str | None = None,  # REQ, connected: the sink's softmax head, which "hard" negatives sample from
        source_control_addr: str | None = None,  # PUSH, connected: tells a phased source to resume
        max_batches: int | None = None,  # stop after this many negative batches
        exit_on_end: bool = False,  # stop at the end-of-stream marker; by default wait for stop()
        **worker_kwargs: Any,
    ):
        super().__init__("sleep", **worker_kwargs)
        if len(snapshot_addrs) != len(layer_configs) or len(negative_addrs) != len(layer_configs):
            raise ValueError("one snapshot and one negative address per layer")
        self.frames_addr = frames_addr
        self.snapshot_addrs = list(snapshot_addrs) + ([head_addr] if head_addr and plan.negatives == "hard" else [])
        self.head: tuple[LinearReadout, list[int]] | None = None
        self.head_refreshes = 0
        self.source_control_addr = source_control_addr
        self.asleep_on: list[tuple[np.ndarray, list[int] | None, int]] = []  # phased: the wake phase's batches
        self.negative_addrs = negative_addrs
        self.plan = plan
        self.num_classes = num_classes
        self.max_batches = max_batches
        self.exit_on_end = exit_on_end
        self.stack = FFStack(layer_configs, label_scale=label_scale, label_relative=label_relative)  # the snapshot: weights only, never trained here
        self.versions: list[int | None] = [None] * len(layer_configs)
        self.dreamer = Dreamer(plan.negatives, num_classes, plan.reservoir, seed)
        # The source publishes single frames; paired negatives stack two of them for a layer 1 that sees pairs (stream.pairs).
        self.frame_values = layer_configs[0].in_features // (2 if plan.negatives in PAIRED_KINDS else 1)
        self.batches = 0
        self.negatives_made = 0
        self.since_snapshot = 0
        self.refreshes = 0
        self.snapshot_timeouts = 0
        self.rate = Rate(time.monotonic)
        self.staleness = Mean()  # wake batches between the snapshot and the negative pass
        self.goodness_neg = [Ema(0.05) for _ in layer_configs]
        self.phases = Phases()  # seconds per phase of the loop, published as busy_s

    def setup(self) -> None:
        self.frames = Receiver(self.socket(zmq.SUB, connect=self.frames_addr, hwm=4), name="sleep.frames")
        self.frames.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.requesters = [self._requester(addr) for addr in self.snapshot_addrs]
        self.pushers = [self.socket(zmq.PUSH, connect=addr, hwm=4, output=True) for addr in self.negative_addrs]
        self.resume = None
        if self.plan.phased and self.source_control_addr:
            self.resume = self.socket(zmq.PUSH, connect=self.source_control_addr, hwm=4, output=True)

    def _requester(self, addr: str) -> Receiver:
        return Receiver(make_socket(self.context, zmq.REQ, connect=addr), name="sleep.snapshot")

    # the loop ------------------------------------------------------------------------------
    def step(self) -> None:
        with self.phases("wait"):
            msg = self.frames.recv(POLL_MS)
        if msg is None:
            return
        if msg.kind == "control":
            if msg.extra.get("command") == "end" and self.exit_on_end:
                self.finished = True
            return
        if msg.kind != "frames" or msg.mode != "learn":
            self.dropped["kind"] += msg.kind != "frames"  # eval copies are the layers' business, not a fault
            return
        batch = np.asarray(msg.array, np.float32)
        if batch.ndim < 2 or len(batch) == 0 or batch[0].size != self.frame_values:
            self.dropped["frame_shape"] += 1  # (B, C, H, W) or (B, D) whose rows fit layer 1 (half of it, paired)
            return
        if self.plan.phased:
            self._phase(batch, msg.label, msg.seq)
            return
        chain_only = self.plan.route == "chain" and self.plan.negatives != "hard"  # no snapshot needed at all
        # sleep_every counts wake batches as the layers step them, so that a recurrent image's 8 steps count 8
        if not chain_only and (self.versions[0] is None or self.since_snapshot * self.wake_steps_per_batch >= self.plan.sleep_every):
            if not self.refresh():
                return  # no snapshot yet: no negatives rather than negatives from random weights
        self.since_snapshot += 1
        self.dream(batch, msg.label, msg.seq)

    def _phase(self, batch: np.ndarray, labels: list[int] | None, seq: int) -> None:
        """Phased sleep: after sleep_every wake batches, a fresh snapshot, the negatives of them all, then resume."""
        self.asleep_on.append((batch, labels, seq))
        if len(self.asleep_on) < self.plan.sleep_every:
            return
        if self.refresh():
            self.since_snapshot = len(self.asleep_on)  # every positive of the phase is this many batches away
            for batch, labels, seq in self.asleep_on:
                self.dream(batch, labels, seq)
        self.asleep_on = []
        resume = wire.Message("control", np.zeros(0, np.float32), stream=self.name, extra={"command": "resume"})
        if self.resume is not None and not send(self.resume, resume, lambda: self.stopping, timeout_ms=5000):
            self.dropped["resume_not_sent"] += 1

    def _ask(self, slot: int) -> dict[str, torch.Tensor] | None:
        """One snapshot by Lazy Pirate: a peer that does not answer in time gets a fresh socket next time."""
        req = self.requesters[slot]
        request = wire.Message("snapshot_request", np.zeros(0, np.float32), stream=self.name)
        send(req.sock, request, lambda: self.stopping, timeout_ms=self.plan.snapshot_timeout_ms)
        reply = req.recv(self.plan.snapshot_timeout_ms)
        if reply is None:
            self.snapshot_timeouts += 1
            req.sock.close(linger=0)
            self.requesters[slot] = self._requester(self.snapshot_addrs[slot])
            return None
        if reply.kind != "snapshot":
            return None  # e.g. the sink has no head yet
        try:
            tensors = wire.unpack_tensors(reply.array, reply.extra.get("tensors"))
        except wire.WireError as exc:
            self.dropped[exc.reason] += 1
            return None
        self._reply_extra = reply.extra
        return {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}

    def refresh(self) -> bool:
        """Fetch every layer's weights, and the sink's head when hard negatives need it."""
        with self.phases("snapshot"):
            return self._refresh()

    def _refresh(self) -> bool:
        ok = True
        for i, layer in enumerate(self.stack.layers):
            tensors = self._ask(i)
            try:
                layer.load_weights(tensors)
            except (TypeError, KeyError, RuntimeError):
                self.dropped["snapshot"] += tensors is not None
                ok = False
                continue
            self.versions[i] = int(self._reply_extra.get("version", 0))
        if len(self.requesters) > len(self.stack.layers):
            self._refresh_head()
        if ok:
            self.refreshes += 1
            self.since_snapshot = 0
        return ok

    def _refresh_head(self) -> None:
        tensors = self._ask(len(self.stack.layers))
        if tensors is None:
            return
        try:
            weight, layers = tensors["linear.weight"], [int(i) for i in self._reply_extra["layers"]]
            head = LinearReadout(weight.shape[1], weight.shape[0])
            head.load_state_dict(tensors)
            self.head = (head, layers)
            self.head_refreshes += 1
        except (KeyError, TypeError, ValueError, RuntimeError):
            self.dropped["head_snapshot"] += 1

    def dream(self, batch: np.ndarray, labels: list[int] | None, seq: int = 0) -> None:
        with self.phases("dream"):
            self._dream(batch, labels, seq)

    def _dream(self, batch: np.ndarray, labels: list[int] | None, seq: int = 0) -> None:
        if self.plan.negatives not in UNLABELLED_KINDS and (labels is None or max(labels) >= self.num_classes):
            self.dropped["label"] += 1
            return
        x = self.dreamer.negatives(batch, labels, self.stack, self.head)
        self.dreamer.observe(batch)
        # Chained, the live layers judge and pass up every negative: no snapshot ages (it was reported as hundreds of batches).
        self.staleness.add(0 if self.plan.route == "chain" else self.since_snapshot - 1)
        for i, (layer, pusher) in enumerate(zip(self.stack.layers, self.pushers)):
            if not layer.cfg.takes_negatives:  # under competition, a layer that sees only part of the frame
                with torch.no_grad():
                    x = layer.normalize(layer(x))
                continue
            extra = {"version": self.versions[i], "form": self.plan.update, "rows": len(x)}
            if self.plan.route == "chain":  # layer 1's inputs only, judged and passed up by the live layers
                update = wire.Message("negative_update", x.numpy(), stream=self.name, seq=seq, extra={"form": "inputs", "rows": len(x)})
                if not send(pusher, update, lambda: self.stopping, timeout_ms=5000):
                    self.dropped["negative_not_sent"] += 1
                break
            if self.plan.update == "gradient":
                grads, stats, h = layer.local_gradients(x, positive=False)
                names = [name for name, _ in layer.named_parameters()]  # the order of `Gradients`
                payload, extra["tensors"] = wire.pack_tensors({name: g.numpy() for name, g in zip(names, grads)})
                extra.update(goodness_neg=stats["goodness"], p_neg=stats["p"])
            else:
                payload = x.flatten(1).numpy()  # (B, D_i): layer i's negative inputs, flat whatever the layer's shape
                with torch.no_grad():
                    h = layer(x)
            self.goodness_neg[i].add(float(layer.goodness(h).mean()))
            # seq is the source batch the negatives were made from, so the layer can pair them with its positives.
            update = wire.Message("negative_update", payload, stream=self.name, seq=seq, extra=extra)
            if not send(pusher, update, lambda: self.stopping, timeout_ms=5000):
                self.dropped["negative_not_sent"] += 1
            x = layer.normalize(h)
        self.batches += 1
        self.negatives_made += len(batch)
        self.rate.add(len(batch))
        if self.max_batches is not None and self.batches >= self.max_batches:
            self.finished = True

    def on_close(self) -> None:
        for req in getattr(self, "requesters", []):
            req.sock.close(linger=0)

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(
            batches=self.batches,
            negatives=self.negatives_made,
            negatives_per_s=self.rate.get(),
            refreshes=self.refreshes,
            snapshot_timeouts=self.snapshot_timeouts,
            head_refreshes=self.head_refreshes,
            sleep_every=self.plan.sleep_every,
            negative_kind=self.plan.negatives,
            staleness=self.staleness.get(),
            busy_s=self.phases.get(),
            goodness_neg=[g.get() for g in self.goodness_neg],
            reservoir=self.dreamer.size,
            dropped=sum(self.dropped.values()) + (sum(self.frames.rejected.values()) if hasattr(self, "frames") else 0),
        )
        return m

    def __repr__(self) -> str:
        return f"<SleepWorker batches={self.batches} refreshes={self.refreshes} K={self.plan.sleep_every}>"
