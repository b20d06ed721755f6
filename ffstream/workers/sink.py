"""Sink worker: the end of the pipeline. Progressive accuracy (predict, then learn), probe, per-frame scores."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zmq

from ffstream.ff import LinearReadout
from ffstream.ff.checkpoint import CheckpointError
from ffstream.monitor.novelty import Alert, NoveltyMeter
from ffstream.monitor.stats import Ema, Histogram, Rate
from ffstream.net import blocks as eval_blocks
from ffstream.net import carry, wire
from ffstream.net.transport import POLL_MS, Receiver, send, try_send
from ffstream.offline.readout_store import load_readout, save_readout
from ffstream.workers.base import Worker, write_json_atomic
from ffstream.workers.delivery import PASS_KEY
from ffstream.workers.online_probe import OnlineProbe

# Bucket bounds of the source-to-sink latency histogram, seconds (Prometheus' defaults, and longer: a backlog shows).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SINK_STATE = "sink.json"
# On a live source, how long the features publisher waits for a subscriber that is behind before it drops a message
# (and counts it): a camera is not held up for long by a consumer that stalled. A file or dataset source waits as long
# as it takes (None), so that a consumer gets every frame and the stream slows to its pace.
FEATURES_WAIT_MS = 1000
FEATURES_HWM = 256  # messages queued per subscriber before the wait starts


class SinkWorker(Worker):
    kind = "sink"

    def __init__(
        self,
        input_addr: str,  # PULL, bound: the top layer's output
        snapshot_addr: str | None = None,  # REP, bound: answers requests for the head's weights (hard negatives)
        *,
        readout_layers: list[int],  # 0-based layers whose normalised activity feeds the head or probe
        num_classes: int | None = None,  # None: an unlabelled stream, no accuracy
        readout_lr: float = 1e-3,  # Adam learning rate of the softmax head / probe
        online_probe: bool = False,  # unsupervised layers: the probe standardises its features and learns from replay (OnlineProbe)
        scores_path: str | None = None,  # JSONL of per-frame goodness per layer
        features_addr: str | None = None,  # PUB, bound: every learned frame's normalised activity, in order; None: off
        features_layers: tuple[int, ...] | None = None,  # which layers' activity it publishes, 1-based (net/carry.py); None: the top layer's as it arrives
        features_wait_ms: int | None = FEATURES_WAIT_MS,  # a subscriber behind: wait this long, then drop; None: wait (file sources)
        novelty: NoveltyMeter | None = None,  # scores each learned frame's goodness per layer on the recent ones; None: off
        alert_events: str | None = None,  # JSONL file, a line per novelty alert; None: none
        on_alert: str | None = None,  # shell command run on each alert, FFSTREAM_ALERT_FRAME/_SCORE in its environment
        checkpoint_dir: str | None = None,  # the head and counters are loaded from here at start and saved here
        frozen: bool = False,  # model.freeze: a new stream through a trained stack: its head is loaded, no counter, nothing saved
        checkpoint_every_s: float = 60.0,  # seconds between periodic saves of the head and counters
        max_frames: int | None = None,  # stop after this many learned frames
        exit_on_end: bool = True,  # the sink's exit is how the supervisor knows that a stream is done
        seed: int = 0,
        eval_step: int | None = None,  # recurrent static images: score the eval copy of this (0-based) step only; None: every one
        ack_addr: str | None = None,  # PUSH, connected: the source's control socket, where barriers are acknowledged; None: none
        **worker_kwargs: Any,
    ):
        super().__init__("sink", **worker_kwargs)
        self.input_addr = input_addr
        self.snapshot_addr = snapshot_addr
        self.readout_layers = readout_layers
        self.num_classes = num_classes
        self.readout_lr = readout_lr
        self.online_probe = online_probe
        self.scores_path = scores_path
        self.features_addr = features_addr
        self.features_layers = frozenset(features_layers) if features_layers else None
        self.features_wait_ms = features_wait_ms
        self.features = None  # the PUB socket, made in setup
        self.features_sent = 0  # messages published on features_addr
        self._subscribed = False  # a subscription has reached the features socket
        self.novelty = novelty
        self.alert_events = alert_events
        self.on_alert = on_alert
        # the most novel frame since the last metrics message (novelty, its z per layer): a spike between two messages shows
        self._novelty_peak: tuple[float, list[float]] | None = None
        self._last_alert: dict | None = None  # the latest alert's event (frame, novelty, t, ...), in the metrics
        self._alert_commands: list[subprocess.Popen] = []  # on_alert commands still running, reaped in step()
        self.checkpoint_dir = checkpoint_dir
        self.frozen = frozen
        self.checkpoint_every_s = checkpoint_every_s
        self._last_checkpoint = time.monotonic()
        # A head loaded from checkpoint_dir, held until the first eval batch shows that it fits this stack
        # (the same layer widths), with the widths it was trained on; None when there was none or it did not fit.
        self._saved_head: tuple[LinearReadout, list[int], dict | None] | None = None  # (head, widths, an OnlineProbe's statistics)
        self._blocks: list[int] | None = None  # the layer widths of the activity the head reads
        self.max_frames = max_frames
        self.exit_on_end = exit_on_end
        self.seed = seed
        self.eval_step = eval_step
        self.readout: LinearReadout | OnlineProbe | None = None  # OnlineProbe on unsupervised streams
        self.frames = 0
        self.evaluated = 0
        self.correct = 0
        self.recent_accuracy = Ema(0.02)
        self.fps = Rate(time.monotonic)
        self.latencies_ms: deque[float] = deque(maxlen=2000)  # source timestamp -> here, learned frames
        self.latency = Histogram(LATENCY_BUCKETS_S)  # the same, in seconds, per frame, over the whole run
        self.ended = False
        self._scores_file = None
        self.ack_addr = ack_addr
        # Exactly-once streams: the pass and the last seq counted (learn rows) and scored (eval copies), so that a replay
        # after a rewind is neither counted nor learned by the head twice; saved in sink.json at every barrier.
        self.pass_id: str | None = None
        self.counted_upto = self.scored_upto = -1
        self.barrier = 0  # the last barrier checkpointed and acknowledged
        self.replayed = 0  # messages of a replay, not counted again

    def setup(self) -> None:
        if self.checkpoint_dir:
            self._restore()  # before the input binds: no frame is counted by a sink that has not yet resumed
        self.input = Receiver(self.socket(zmq.PULL, bind=self.input_addr, hwm=8), name="sink.in")
        self.poller = zmq.Poller()
        self.poller.register(self.input.sock, zmq.POLLIN)
        self.snapshot = None
        if self.snapshot_addr:
            self.snapshot = Receiver(self.socket(zmq.REP, bind=self.snapshot_addr), name="sink.snap")
            self.poller.register(self.snapshot.sock, zmq.POLLIN)
        # Upstream, so not watched for health: a sink is healthy once it runs, whether or not the source is up yet.
        self.ack = self.socket(zmq.PUSH, connect=self.ack_addr, hwm=64, watch=False) if self.ack_addr else None
        if self.features_addr:
            # NODROP: a subscriber at its high-water mark makes send wait (bounded by FEATURES_WAIT_MS) instead of
            # losing the message silently, so a consumer that keeps up gets every frame. XPUB, a PUB that hears
            # subscriptions: a file source's first frame waits for the first subscriber (_await_subscriber).
            self.features = self.socket(zmq.XPUB, bind=self.features_addr, hwm=FEATURES_HWM, output=True)
            self.features.setsockopt(zmq.XPUB_NODROP, 1)
        if self.scores_path:
            Path(self.scores_path).parent.mkdir(parents=True, exist_ok=True)
            self._scores_file = open(self.scores_path, "a", buffering=1)

    def step(self) -> None:
        if self.checkpoint_dir and not self.frozen and time.monotonic() - self._last_checkpoint > self.checkpoint_every_s:
            self._checkpoint()  # on a period, idle or not: a kill -9 loses at most one period of the head's learning
        if self._alert_commands:
            self._reap_alert_commands()
        ready = dict(self.poller.poll(POLL_MS))
        if self.snapshot is not None and self.snapshot.sock in ready:
            self._answer_snapshot()
        if self.input.sock not in ready:
            return
        msg = self.input.recv_ready()
        if msg is None:
            return
        if msg.kind == "control":
            if msg.extra.get("command") == "end":
                self.ended = True
                self.finished = self.exit_on_end
            return
        if msg.kind == "barrier":
            self._barrier(msg)
            return
        if not self._first_time(msg):
            self.replayed += 1
            return
        if msg.kind != "activity":
            self.dropped["kind"] += 1
        elif msg.array.ndim < 2 or len(msg.array) == 0:
            self.dropped["shape"] += 1  # activity is (B, N) or (B, C, H, W)
        elif msg.mode == "eval":
            if self.eval_step is None or msg.extra.get("step", self.eval_step) == self.eval_step:
                self._evaluate(msg)
        else:
            self._record(msg)

    def _first_time(self, msg: wire.Message) -> bool:
        """Whether an exactly-once stream's message is new here (a replayed one is neither counted nor learned again)."""
        pass_id = msg.extra.get(PASS_KEY)
        if not isinstance(pass_id, str):
            return True
        if pass_id != self.pass_id:
            self.pass_id, self.counted_upto, self.scored_upto = pass_id, -1, -1
        upto = "scored_upto" if msg.mode == "eval" else "counted_upto"
        if msg.seq <= getattr(self, upto):
            return False
        setattr(self, upto, msg.seq)
        return True

    def _barrier(self, msg: wire.Message) -> None:
        """Checkpoint the head and counters, then tell the source whether every layer had learned all before it."""
        barrier = msg.extra.get("barrier")
        if not wire.is_int(barrier):
            self.dropped["barrier"] += 1
            return
        self.barrier = barrier
        if self.checkpoint_dir and not self.frozen:
            self._checkpoint()
        complete = not msg.extra.get("behind")
        if not complete:
            self.log.info("barrier %d: layers %s miss batches; the source replays", barrier, msg.extra.get("behind"))
        ack = wire.Message("control", np.zeros(0, np.float32), stream=self.name, seq=msg.seq,
                           extra={"command": "ack", "barrier": barrier, "complete": complete, PASS_KEY: msg.extra.get(PASS_KEY),
                                  "behind": msg.extra.get("behind") or []})
        if self.ack is None or not try_send(self.ack, ack):
            self.dropped["ack_not_sent"] += 1  # the source sends barriers on; the final one again until acknowledged

    def _answer_snapshot(self) -> None:
        """The head's weights, or an "empty" control reply before it exists (REP must always answer)."""
        request = self.snapshot.recv_ready()
        if not self.snapshot.took:
            return  # no request after all: none to answer
        if request is None or request.kind != "snapshot_request" or self.readout is None:
            self.dropped["bad_snapshot_request"] += request is not None and request.kind != "snapshot_request"
            reply = wire.Message("control", np.zeros(0, np.float32), stream=self.name, extra={"command": "empty"})
        else:
            flat, layout = wire.pack_tensors({k: v.detach().numpy() for k, v in self._linear().state_dict().items()})
            reply = wire.Message("snapshot", flat, stream=self.name, extra={"tensors": layout, "layers": self.readout_layers})
        send(self.snapshot.sock, reply, lambda: self.stopping, timeout_ms=1000)

    def _record(self, msg) -> None:
        now = time.time()
        rows = len(msg.array)
        step, iterations = msg.extra.get("step"), msg.extra.get("iterations")
        repeated = isinstance(step, int) and isinstance(iterations, int)
        if not repeated or step == iterations - 1:  # a recurrent static image counts once, at its last step
            self.frames += rows
            self.fps.add(rows)
            self.latencies_ms.append((now - msg.t_src) * 1000)
            self.latency.add(now - msg.t_src, rows)
            if self.features is not None:
                self._publish_features(msg)
            if self.novelty is not None and msg.trace:
                self._score_novelty(msg, first_frame=self.frames - rows)
        if self._scores_file and msg.trace:
            for r in range(rows):
                row = {"stream": msg.stream, "seq": msg.seq, "row": r, "t_src": msg.t_src,
                       "latency_ms": round((now - msg.t_src) * 1000, 3), "goodness": [layer[r] for layer in msg.trace]}
                if step is not None:
                    row["step"] = step
                if msg.label is not None:
                    row["label"] = msg.label[r]
                self._scores_file.write(json.dumps(row) + "\n")
        if self.max_frames is not None and self.frames >= self.max_frames:
            self.finished = True

    def _publish_features(self, msg) -> None:
        """The chosen layers' normalised activity (B, F) side by side, as the layers carried it up (net/carry.py), with
        its seq, labels and per-layer goodness; without carried blocks, the top layer's activity as it arrived."""
        if not self._subscribed and not self._await_subscriber():
            self.dropped["features_not_sent"] += 1
            return
        extra = {k: msg.extra[k] for k in ("step", "iterations") if k in msg.extra}
        array = msg.array
        if self.features_layers is not None:
            chosen = carry.published(msg.array, msg.extra, self.features_layers)
            if chosen is None:
                self.dropped["features_blocks"] += 1  # a layer that does not carry (another config): nothing to publish
                return
            array, extra[carry.BLOCKS], extra[carry.LAYERS] = chosen
        out = wire.Message("activity", array, stream=msg.stream, seq=msg.seq, t_src=msg.t_src, label=msg.label,
                           trace=msg.trace, extra=extra)
        if send(self.features, out, lambda: self.stopping, timeout_ms=self.features_wait_ms):
            self.features_sent += 1
        else:
            self.dropped["features_not_sent"] += 1

    def _await_subscriber(self) -> bool:
        """Whether a subscriber has subscribed. A file source waits for one (a warning every 10 s; a stop ends the
        wait), so that a consumer started after the run still gets the first frame; a live source does not wait."""
        waited_since = time.monotonic()
        while not self.waiting():  # it reports and beats meanwhile: a sink waiting for a consumer is not a stalled one
            if self.features.poll(POLL_MS if self.features_wait_ms is None else 0, zmq.POLLIN):
                subscription = self.features.recv()
                self._subscribed = self._subscribed or subscription[:1] == b"\x01"  # 1: subscribe, 0: unsubscribe
                continue
            if self._subscribed or self.features_wait_ms is not None:
                return self._subscribed
            if time.monotonic() - waited_since > 10:
                self.log.warning("waiting for a subscriber on %s: a file source publishes its first frame to one", self.features_addr)
                waited_since = time.monotonic()
        return self._subscribed

    def _score_novelty(self, msg, first_frame: int) -> None:
        """Each row's goodness per layer (the message's trace) through the meter; an alert on a run above the threshold."""
        for r in range(len(msg.array)):
            score, alert = self.novelty.add(np.array([layer[r] for layer in msg.trace]), frame=first_frame + r)
            if score is not None and (self._novelty_peak is None or score > self._novelty_peak[0]):
                self._novelty_peak = (score, [round(float(z), 4) for z in self.novelty.last_layers])
            if alert is not None:
                self._alert(alert, msg.seq)

    def _alert(self, alert: Alert, seq: int) -> None:
        """Say it three ways: a JSONL line, a control message on the metrics socket, and the user's command."""
        event = {"event": "novelty_alert", "t": time.time(), "frame": alert.frame, "seq": seq, "novelty": round(alert.score, 4),
                 "frames_above": alert.frames_above, "threshold": self.novelty.threshold}
        if self.novelty.last_layers is not None:
            event["layers"] = [round(float(z), 4) for z in self.novelty.last_layers]  # which layers saw it
        self._last_alert = event
        self.log.warning("novelty alert at frame %d: %.2f above %.2f for %d frames", alert.frame, alert.score,
                         self.novelty.threshold, alert.frames_above)
        if self.alert_events:
            with open(self.alert_events, "a") as fh:  # opened per alert: alerts are rare, and each line is whole on disk
                fh.write(json.dumps(event) + "\n")
        self.publish_to_monitor(wire.Message("control", np.zeros(0, np.float32), stream=self.name,
                                             extra={"command": "alert", **event}))
        if self.on_alert:
            env = {**os.environ, "FFSTREAM_ALERT_FRAME": str(alert.frame), "FFSTREAM_ALERT_SCORE": f"{alert.score:.4f}"}
            try:  # not waited for: a slow command must not hold the stream up
                self._alert_commands.append(subprocess.Popen(self.on_alert, shell=True, env=env, stdin=subprocess.DEVNULL))
            except OSError as exc:
                self.log.warning("on_alert command %r did not start: %s", self.on_alert, exc)

    def _reap_alert_commands(self) -> None:
        for proc in [p for p in self._alert_commands if p.poll() is not None]:
            self._alert_commands.remove(proc)
            if proc.returncode:
                self.log.warning("on_alert command exited %d", proc.returncode)

    def _evaluate(self, msg) -> None:
        """Predict, then learn: every labelled frame is scored before the head has seen its label."""
        blocks = msg.extra.get(eval_blocks.KEY)
        if not eval_blocks.readable(blocks, msg.array, self.readout_layers):
            self.dropped["blocks"] += 1
            return
        if not self.num_classes:
            return  # no probe on this stream
        if msg.label is None or max(msg.label) >= self.num_classes:
            self.dropped["label"] += 1  # nothing to score against
            return
        features = torch.from_numpy(eval_blocks.features(msg.array, blocks, self.readout_layers))
        labels = torch.tensor(msg.label)
        if self.readout is None:
            self.readout = self._head_for(features.shape[1], list(blocks))
        hits = int((self.readout.predict(features) == labels).sum())
        self.correct += hits
        self.evaluated += len(labels)
        self.recent_accuracy.add(hits / len(labels))
        self.readout.learn(features, labels)

    # checkpoints: the head and the counters survive a restart --------------------------------------------------
    def _restore(self) -> None:
        """Load the counters, and keep the saved head for _head_for, when they were made for this stack's readout."""
        try:
            state = json.loads((Path(self.checkpoint_dir) / SINK_STATE).read_text())
        except FileNotFoundError:
            return  # a fresh run
        except (OSError, ValueError) as exc:
            self.log.warning("not resuming the sink from %s: %s", self.checkpoint_dir, exc)
            return
        if not isinstance(state, dict) or state.get("readout_layers") != self.readout_layers or state.get("num_classes") != self.num_classes:
            self.log.warning("the sink state in %s is for another readout; starting afresh", self.checkpoint_dir)
            return
        blocks = state.get("blocks")
        if isinstance(blocks, list):
            try:
                readout, layers, probe_state = load_readout(self.checkpoint_dir, with_probe_state=True)
            except CheckpointError as exc:
                self.log.warning("not resuming the head: %s", exc)
                return
            if layers != self.readout_layers or readout.linear.out_features != self.num_classes:
                self.log.warning("the head in %s does not fit this readout; starting afresh", self.checkpoint_dir)
                return
            self._saved_head = (readout, blocks, probe_state)
        if self.frozen:
            # Frame numbers (alerts, scores) count this stream's frames, not the training run's
            self.log.info("frozen: the head from %s, counting this stream's frames from 0", self.checkpoint_dir)
            return
        for key in ("frames", "evaluated", "correct", "counted_upto", "scored_upto", "barrier"):
            value = state.get(key)
            if wire.is_int(value) and value >= -1:
                setattr(self, key, value)
        self.pass_id = state.get(PASS_KEY) if isinstance(state.get(PASS_KEY), str) else None
        self.log.info("resumed the sink from %s: %d frames, %d evaluated", self.checkpoint_dir, self.frames, self.evaluated)

    def _head_for(self, in_features: int, blocks: list[int]) -> LinearReadout | OnlineProbe:
        """The saved head if it was trained on activity of these layer widths, else a new one."""
        if self.online_probe:
            head = OnlineProbe(in_features, self.num_classes, lr=self.readout_lr, seed=self.seed)
        else:
            head = LinearReadout(in_features, self.num_classes, lr=self.readout_lr, seed=self.seed)
        saved, self._saved_head = self._saved_head, None
        if saved is not None and saved[1] == blocks and saved[0].linear.in_features == in_features:
            if isinstance(head, OnlineProbe):  # the folded head, unfolded by its statistics (none saved: mean 0, variance 1)
                head.unfold(saved[0], saved[2] or {"scaler.mean": torch.zeros(in_features), "scaler.var": torch.ones(in_features)})
            else:
                head.load_state_dict(saved[0].state_dict())
                head.restore_moments(saved[2] or {})  # Adam's state too, where saved (older files: it starts again)
            self.log.info("using the saved head (%d features)", in_features)
        elif saved is not None:
            self.log.warning("the saved head was trained on layers of widths %s, this stack has %s: a new head", saved[1], blocks)
            self.evaluated = self.correct = 0  # accuracy of the old head says nothing of the new
        self._blocks = blocks
        return head

    def _checkpoint(self) -> None:
        """Head first, then the counters that describe it: a crash between the two leaves a head newer than its counts."""
        self._last_checkpoint = time.monotonic()
        blocks = self._blocks
        if self.readout is not None:
            probe_state = self.readout.saved_state() if isinstance(self.readout, OnlineProbe) else self.readout.moments()
            save_readout(self.checkpoint_dir, self._linear(), self.readout_layers, self.num_classes, probe_state)
        elif self._saved_head is not None:
            blocks = self._saved_head[1]  # not used yet this run: the saved head stays, and stays described
        state = {"readout_layers": self.readout_layers, "num_classes": self.num_classes, "blocks": blocks,
                 "frames": self.frames, "evaluated": self.evaluated, "correct": self.correct,
                 PASS_KEY: self.pass_id, "counted_upto": self.counted_upto, "scored_upto": self.scored_upto, "barrier": self.barrier}
        write_json_atomic(Path(self.checkpoint_dir) / SINK_STATE, state)

    def _linear(self) -> LinearReadout:
        """The head as a LinearReadout on raw features (an OnlineProbe folds its statistics in)."""
        return self.readout.folded() if isinstance(self.readout, OnlineProbe) else self.readout

    def on_close(self) -> None:
        for proc in self._alert_commands:  # give a running on_alert command a moment, then leave it be
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.log.warning("on_alert command still running at exit (pid %d)", proc.pid)
        if self._scores_file:
            self._scores_file.close()
        if self.checkpoint_dir and not self.frozen:
            self._checkpoint()  # the head only once this run has one: a saved head is never replaced by an untrained one

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        m.update(
            frames=self.frames,
            fps=self.fps.get(),
            evaluated=self.evaluated,
            accuracy=round(self.correct / self.evaluated, 6) if self.evaluated else None,
            accuracy_recent=self.recent_accuracy.get(),
            latency_p50_ms=round(float(np.percentile(lat, 50)), 3) if lat is not None else None,
            latency_p99_ms=round(float(np.percentile(lat, 99)), 3) if lat is not None else None,
            latency_histogram_s=self.latency.get(),
            features_sent=self.features_sent,
            novelty=self.novelty.last if self.novelty else None,
            # each layer's part of it (the latest scored frame's, None in warm-up), the threshold and the last alert: the web page
            novelty_layers=[round(float(z), 4) for z in self.novelty.last_layers]
            if self.novelty and self.novelty.last is not None and self.novelty.last_layers is not None else None,
            novelty_threshold=self.novelty.threshold if self.novelty else None,
            novelty_peak=round(self._novelty_peak[0], 4) if self._novelty_peak else None,
            novelty_peak_layers=self._novelty_peak[1] if self._novelty_peak else None,
            novelty_last_alert=self._last_alert,
            novelty_histogram=self.novelty.histogram.get() if self.novelty else None,
            novelty_alerts=self.novelty.alerts if self.novelty else None,
            ended=self.ended,
            barrier=self.barrier,
            replayed=self.replayed,
            dropped=sum(self.dropped.values()) + (sum(self.input.rejected.values()) if hasattr(self, "input") else 0),
        )
        return m

    def publish_metrics(self, figures: dict[str, Any]) -> None:
        super().publish_metrics(figures)
        self._novelty_peak = None  # the next message's peak is of the frames after this one

    def __repr__(self) -> str:
        return f"<SinkWorker frames={self.frames} evaluated={self.evaluated} correct={self.correct}>"
