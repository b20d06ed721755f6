"""Source worker: reads frames, batches them, and feeds layer 1 and the sleep worker."""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any

import numpy as np
import zmq

from ffstream.net import wire
from ffstream.net.transport import POLL_MS, Receiver, send, try_send
from ffstream.sources import FrameSource, Position
from ffstream.sources.preprocess import SuccessorPairs
from ffstream.workers.base import GaveUp, Worker
from ffstream.workers.delivery import GAP_NOTICE, PASS_KEY, REPLAY_KEY
from ffstream.workers.source_position import PositionStore, SavedPosition
from ffstream.monitor.stats import Rate

RESUME_TIMEOUT_S = 60.0  # phased sleep: the longest the source waits for the sleep worker before waking anyway
# Batches that may still sit in this process's send queue (high-water mark 4, plus the one being written, plus
# a spare; an eval copy makes a batch two messages). A kill -9 loses them, so the saved position stays this
# many batches behind what was sent: a restart replays a few frames rather than losing any.
IN_FLIGHT_BATCHES = 6
# Exactly-once: the final barrier (the end of the stream) is sent again when no acknowledgement came within this
# long (a worker restarted and lost it), and the source gives up, exiting non-zero, after END_ACK_DEADLINE_S.
FINAL_BARRIER_RESEND_S = 10.0
END_ACK_DEADLINE_S = 300.0
# Exactly-once: on SIGTERM or SIGINT the source stops reading and sends a last barrier; it waits this long for the sink's
# acknowledgement, so that the position it commits is where it stopped and a resumed run replays nothing.
STOP_ACK_WAIT_S = 10.0
MAX_OUTSTANDING_BARRIERS = 1000  # barriers sent and not yet acknowledged that the source remembers (a dead sink)
# Exactly-once: rewinds to one commit that never led to another. A replay from the commit fills what a restarted
# worker lost after it; a layer whose checkpoint is older than the commit (replaced, or lost) it never fills, and the
# source would rewind for ever. Past this many the run gives up in one line instead.
MAX_FRUITLESS_REWINDS = 20


class SourceWorker(Worker):
    """File and dataset sources block on backpressure and lose nothing; live sources drop and count.

    Every batch goes to layer 1 (PUSH) and, as raw frames, to the sleep
    worker (XPUB). With `eval_every` set on a labelled stream, a forward-only
    copy of the batch with a neutral label goes first, so the sink can predict
    each frame before the network learns from it.
    """

    kind = "source"

    def __init__(
        self,
        source: FrameSource,
        output_addr: str,  # PUSH, connected: layer 1's input
        publish_addr: str | None,  # XPUB, bound: raw frames for the sleep worker; None without sleep
        *,
        batch: int = 64,  # frames per message
        max_frames: int | None = None,  # stop after this many frames
        eval_every: int = 1,  # send an eval copy of every n-th batch (labelled streams); 0 never
        labelled: bool = True,  # send labels (supervised); False hides them from the network
        wait_for_subscribers: int = 0,  # how many sleep workers to wait for before the first frame
        subscriber_timeout_s: float = 30.0,  # how long that wait may take before frames flow anyway
        exit_on_end: bool = False,  # stop after the last frame; by default idle until stop(), so nothing queued is lost
        phase_length: int | None = None,  # phased sleep: pause after this many batches until the sleep worker says resume
        control_addr: str | None = None,  # PULL, bound: where that "resume" arrives
        rate_fps: float | None = None,  # pace reads to this many frames/s (a simulated live camera); None: as fast as it can
        position_path: str | None = None,  # JSON where a file stream's position is kept, to resume after a restart; None: start over
        position_every_s: float = 0.5,  # seconds between saves of that position (each is a small fsync'd write)
        run_id: str | None = None,  # names this run, so that a restart within it keeps an ended stream ended
        iterations: int = 1,  # recurrent static images: send each batch this many times, as steps 0..n-1 (seq = batch·n + step)
        eval_steps: int | None = None,  # with iterations > 1: eval copies of the first this many steps only; None: all
        interleave: int = 1,  # with iterations > 1: send the steps of this many batches in turn (A1 B1 A2 B2 ...)
        barrier_every: int = 0,  # exactly-once (a file or dataset with position_path, one step per batch): a barrier every this many batches; 0 off
        barrier_min_s: float = 0.0,  # ... and at least this many seconds after the last barrier (stream.barrier_min_s)
        end_ack_deadline_s: float = END_ACK_DEADLINE_S,  # exactly-once: the longest the end of the stream waits for its acknowledgement
        pairs: bool = False,  # SCFF (stream.pairs): layer 1 gets each frame after the one before it, (B, 2C, H, W); the sleep worker single frames
        **worker_kwargs: Any,
    ):
        super().__init__("source", **worker_kwargs)
        self.source = source
        self.output_addr = output_addr
        self.publish_addr = publish_addr
        self.batch = batch
        self.max_frames = max_frames
        self.eval_every = eval_every
        self.labelled = labelled and source.num_classes is not None
        self.wait_for_subscribers = wait_for_subscribers
        self.subscriber_timeout_s = subscriber_timeout_s
        self.exit_on_end = exit_on_end
        self.rate_fps = rate_fps
        self.phase_length = phase_length
        self.iterations = iterations
        self.eval_steps = iterations if eval_steps is None else eval_steps
        if interleave < 1:
            raise ValueError(f"interleave must be at least 1, got {interleave}")
        self.interleave = interleave if iterations > 1 else 1
        self.control_addr = control_addr
        self.pairs = SuccessorPairs() if pairs else None  # keeps the last frame sent, so pairs span batch boundaries
        self.pauses = 0
        self.resume_timeouts = 0
        self._paced_from: tuple[float, int] | None = None  # (monotonic time, self.frames) of the first paced batch
        self.ended = False
        self.frames = 0
        self.batches = 0
        self.send_drops = 0
        self.subscribers = 0
        self.fps = Rate(time.monotonic)
        self.resumed_from: int | None = None  # frames already sent before this process, when it resumed
        self.position_every_s = position_every_s
        self._sent: deque[SavedPosition] = deque(maxlen=IN_FLIGHT_BATCHES + 1)  # after each of the last batches
        self._position_saved_at = time.monotonic()
        identity = None if source.live or position_path is None else source.identity()
        self.positions = PositionStore(position_path, identity, run_id) if identity is not None else None
        self._iter = iter(source)
        # Exactly-once delivery (DESIGN.md §2, workers/delivery.py): barriers, acknowledged by the sink; the position is
        # committed only at an acknowledged barrier, and the stream rewinds to it when a barrier comes back incomplete.
        self.exactly_once = barrier_every > 0 and self.positions is not None and iterations == 1 and control_addr is not None
        self.barrier_every = barrier_every
        self.end_ack_deadline_s = end_ack_deadline_s
        self.pass_id: str | None = None  # the pass over the stream that seqs belong to (kept in the position file)
        self.barrier_id = 0  # the last barrier sent; ids only grow, across rewinds and restarts
        self.committed: SavedPosition | None = None  # the last acknowledged barrier's position: where a restart or rewind resumes
        self._outstanding: dict[int, SavedPosition] = {}  # barrier id -> the position after the batches before it
        self._barrier_at = 0  # self.batches when the last barrier went
        self.barrier_min_s = barrier_min_s
        self._barrier_sent_s = float("-inf")  # time.monotonic() of the last barrier sent: the first one waits for batches only
        self._rewound_after = 0  # incomplete acks of barriers up to this id came before the last rewind: ignored
        self._final: tuple[int, float] | None = None  # the final barrier in wait: (id, when sent)
        self._end_started: float | None = None  # when the stream first ran out (the end's acknowledgement deadline counts from it)
        self.barriers = self.acks = self.rewinds = self.gap_notices = 0
        self._rewinds_since_commit = 0  # MAX_FRUITLESS_REWINDS
        self.replay = uuid.uuid4().hex[:8]  # every batch carries it; new at each start and rewind (workers/delivery.py)
        self._streaming = False  # set at the first step: setup (the start-up handshakes) is over
        self._stop_requested: float | None = None  # exactly-once: when a stop came (monotonic); the stop barrier is then taken
        self._stop_barrier: int | None = None  # its id, once sent
        self.stop_barrier_acked: bool | None = None  # whether it was acknowledged complete (committed); None: none taken
        if self.positions is not None:
            self._resume()
        if self.exactly_once and self.pass_id is None:
            self._start_pass()

    def _resume(self) -> None:
        """Start where the saved position says (a restart), with the counters it had, so seqs and max_frames carry on."""
        saved = self.positions.load()
        if saved is None:
            return
        if self.exactly_once and saved.pass_id is None:
            self.log.info("the saved position %s has no pass id (not exactly-once); starting from the beginning", self.positions.path)
            return
        self.pass_id, self.barrier_id, self.committed, self._rewound_after = saved.pass_id, saved.barrier, saved, saved.barrier
        self.source.seek(saved.position)
        self._iter = iter(self.source)
        self._forget_previous()
        self.frames, self.batches, self.resumed_from = saved.frames, saved.batches, saved.frames
        self._sent.append(saved)
        self.log.info("resuming %s at frame %d (pass %d, frame %d of it) from %s", self.source.name, saved.frames,
                      saved.position.epoch, saved.position.offset, self.positions.path)
        if saved.ended:
            self._iter = iter(())  # a restart after the end: nothing to replay, the end marker goes again
        self._barrier_at = self.batches

    def _forget_previous(self) -> None:
        """After a jump in the stream, the next frame is paired with itself, not with the frame sent before the jump."""
        if getattr(self, "pairs", None) is not None:
            self.pairs.reset()

    def _start_pass(self) -> None:
        """A new pass over the stream: a new id, committed at once, so that a restart before the first acknowledged
        barrier resumes this pass (from its start) rather than starting another the workers do not know."""
        self.pass_id = uuid.uuid4().hex[:12]
        self.committed = SavedPosition(self.source.position, self.frames, self.batches, barrier=self.barrier_id, pass_id=self.pass_id)
        self.positions.save(self.committed)

    @property
    def total(self) -> int | None:
        totals = [t for t in (self.source.total, self.max_frames) if t is not None]
        return min(totals) if totals else None

    def setup(self) -> None:
        # A file or paced source waits for layer 1 to bind, which it does once the stack above it is up and warm
        # (Worker.await_peers); a live camera never waits: what no one takes is dropped, as at any other time.
        self.output = self.socket(zmq.PUSH, connect=self.output_addr, hwm=4, output=True, ready=not self.source.live)
        if not self.source.live:
            self.await_peers(self.output)
        self.publisher = None
        if self.publish_addr:
            self.publisher = self.socket(zmq.XPUB, bind=self.publish_addr, hwm=4, output=True)
            # A file source waits for a slow sleep worker instead of dropping its frames.
            self.publisher.setsockopt(zmq.XPUB_NODROP, 0 if self.source.live else 1)
            self._await_subscribers()
        self.control = None
        if (self.phase_length or self.exactly_once) and self.control_addr:
            # phased sleep: the sleep worker's "resume"; exactly-once: the sink's acknowledgements of barriers
            self.control = Receiver(self.socket(zmq.PULL, bind=self.control_addr, hwm=64), name="source.control")

    def _await_subscribers(self) -> None:
        """The handshake: XPUB hears each subscription, so the first frames are not lost to a slow joiner."""
        deadline = time.monotonic() + self.subscriber_timeout_s
        while self.subscribers < self.wait_for_subscribers and not self.stopping:
            if time.monotonic() > deadline:
                self.log.warning("no sleep worker subscribed after %.0f s; starting without it", self.subscriber_timeout_s)
                return
            self._count_subscriptions(POLL_MS)

    def _count_subscriptions(self, timeout_ms: int = 0) -> None:
        while self.publisher is not None and self.publisher.poll(timeout_ms, zmq.POLLIN):
            event = self.publisher.recv()
            self.subscribers += 1 if event[:1] == b"\x01" else -1
            timeout_ms = 0

    def stop(self) -> None:
        """Exactly-once, mid-stream: the first stop takes a stop barrier (step ends the loop once it is acknowledged,
        or after STOP_ACK_WAIT_S); a second stop, or any other stream, stops at once."""
        if self.exactly_once and self._streaming and not self.ended and self._stop_requested is None and not self.finished:
            self._stop_requested = time.monotonic()
            return
        super().stop()  # before the first step (waiting for peers at start-up) too: nothing sent, nothing to commit

    def step(self) -> None:
        self._streaming = True
        if self._stop_requested is not None:
            self._stop_with_barrier()
            return
        if self.exactly_once and not self.ended:
            self._take_acks(POLL_MS if self._final is not None else 0)
            if self._final is not None:
                self._await_final()
                return
        if self.ended:
            self._stop.wait(POLL_MS / 1000)  # idle: what is queued downstream is still being delivered
            return
        if self.rate_fps and not self._pace():
            return
        group = self._next_group()
        if not group:
            if self.exactly_once:
                self._end_started = self._end_started or time.monotonic()
                self._barrier(final=True)  # the end goes once this is acknowledged complete
            else:
                self._end()
            return
        self._count_subscriptions()
        batches = []
        for index, (frames, _) in enumerate(group, start=self.batches):
            pixels = np.stack([f.pixels for f in frames])  # (B, C, H, W)
            labels = [int(f.label) for f in frames] if self.labelled else None
            t_src = min(f.t_src for f in frames)
            batches.append((index, pixels, labels, t_src))
            # The sleep worker's copy, once per batch, before the batch's steps: its negatives are made meanwhile.
            self._publish(wire.Message("frames", pixels, seq=index, t_src=t_src, label=labels))
            if self.pairs is not None:
                batches[-1] = (index, self.pairs(pixels), labels, t_src)  # layer 1's copy: (B, 2C, H, W), pairs in time order
        n = self.iterations
        for step in range(n):
            # Recurrent static images: the header says which batch ("frame") and which iteration of it ("step") this is.
            # Interleaved batches keep a pipeline of layers busy while each layer hears the one above one
            # step late on every batch when they keep pace: the layer above works on the other batch's step meanwhile.
            for index, pixels, labels, t_src in batches:
                extra = {"frame": index, "step": step, "iterations": n} if n > 1 else {}
                if self.exactly_once:
                    extra[PASS_KEY], extra[REPLAY_KEY] = self.pass_id, self.replay
                if labels is not None and self.eval_every and index % self.eval_every == 0 and step < self.eval_steps:
                    self._emit(wire.Message("frames", pixels, seq=index * n + step, t_src=t_src, label=labels, mode="eval", extra=extra))
                self._emit(wire.Message("frames", pixels, seq=index * n + step, t_src=t_src, label=labels, extra=extra))
        phases_before = self.batches // self.phase_length if self.phase_length and self.control is not None else 0
        for frames, position in group:
            self.batches += 1
            self.frames += len(frames)
            self.fps.add(len(frames))
            self._sent.append(SavedPosition(position, self.frames, self.batches))
        if (self.exactly_once and self.batches - self._barrier_at >= self.barrier_every
                and time.monotonic() - self._barrier_sent_s >= self.barrier_min_s):
            self._barrier()
        elif not self.exactly_once and self.positions is not None and time.monotonic() - self._position_saved_at >= self.position_every_s:
            self._save_position()
        if self.phase_length and self.control is not None and self.batches // self.phase_length > phases_before:
            self._await_resume()

    def _next_group(self) -> list[tuple[list, Position]]:
        """The next `interleave` batches of frames (fewer at the end of the stream), each with the source's position
        after it, where a restart resumes once it is delivered; [] when the stream has ended."""
        group: list[tuple[list, Position]] = []
        while len(group) < self.interleave:
            frames = self._next_frames(taken=sum(len(g) for g, _ in group))
            if not frames:
                break
            group.append((frames, self.source.position))
        return group

    def _publish(self, msg: wire.Message) -> None:
        """A batch for the sleep worker, if there is one: dropped when it is behind on a live stream, else waited for."""
        if self.publisher is None:
            return
        if self.source.live:
            try_send(self.publisher, msg)
        else:
            send(self.publisher, msg, self.waiting)

    def _await_resume(self) -> None:
        """Phased sleep: the wake phase is over; wait (bounded) while the network sleeps on it."""
        self.pauses += 1
        deadline = time.monotonic() + RESUME_TIMEOUT_S
        while not self.stopping and self._stop_requested is None and time.monotonic() < deadline:
            msg = self.control.recv(POLL_MS)
            if msg is not None and msg.kind == "control" and msg.extra.get("command") == "resume":
                return
            if msg is not None and msg.kind == "control" and msg.extra.get("command") in ("ack", GAP_NOTICE):
                self._on_control(msg)
                continue
            self.dropped["control"] += msg is not None  # a valid message, but not a resume
        if not self.stopping and self._stop_requested is None:
            self.resume_timeouts += 1
            self.log.warning("no resume from the sleep worker within %.0f s; waking anyway", RESUME_TIMEOUT_S)

    def _pace(self) -> bool:
        """Wait (interruptibly) until the next batch's last frame is due at rate_fps; False if stopped meanwhile.

        Frames are read after the wait, so their t_src is the simulated capture time and the sink's
        latency covers only the pipeline (plus, for batches over one frame, the wait to fill the batch).
        """
        now = time.monotonic()
        if self._paced_from is None:
            # From this process's first batch: a restart resumed at frame F must not first wait F / rate_fps (150 s seen
            # in docker-compose, with nothing sent and no metrics meanwhile). A rewind sets self.frames back, so
            # the replay goes at full speed until it has caught up, then at the pace again.
            self._paced_from = (now, self.frames)
        start, first = self._paced_from
        due = start + (self.frames - first + self.batch - 1) / self.rate_fps
        if due > now:
            self._stop.wait(due - now)
        return not self.stopping

    def _next_frames(self, taken: int = 0) -> list:
        """Up to a batch of frames; taken: frames already read for this step but not yet counted in self.frames."""
        room = self.batch if self.max_frames is None else min(self.batch, self.max_frames - self.frames - taken)
        frames: list = []
        if room <= 0:
            return frames
        for frame in self._iter:
            frames.append(frame)
            if len(frames) >= room:
                break
        return frames

    def _emit(self, msg: wire.Message) -> None:
        if self.source.live:
            if not try_send(self.output, msg):
                self.send_drops += len(msg.array)  # the pipeline is busy: the newest frame wins
        elif not send(self.output, msg, self.waiting):
            self.send_drops += len(msg.array)

    def _end(self) -> None:
        """Tell everyone downstream that the stream is over, then stop."""
        end = wire.Message("control", np.zeros(0, np.float32), seq=self.batches, extra={"command": "end"})
        send(self.output, end, lambda: self.stopping, timeout_ms=5000)
        if self.publisher is not None:
            send(self.publisher, end, lambda: self.stopping, timeout_ms=5000)
        self.ended = True
        self._final = None
        self.finished = self.exit_on_end
        self.log.info("end of stream after %d frames", self.frames)
        if self.positions is not None and not self.exactly_once:
            self.positions.save(SavedPosition(self.source.position, self.frames, self.batches, ended=True))

    # exactly-once: barriers, acknowledgements, commits and rewinds --------------------------------------------------
    def _barrier(self, final: bool = False, deadline_s: float | None = None) -> None:
        """A barrier after the batches sent so far: every worker checkpoints at it, the sink acknowledges it.
        deadline_s: the longest the send may wait for room (the stop barrier); None: as long as backpressure lasts."""
        self.barrier_id += 1
        self.barriers += 1
        msg = wire.Message("barrier", np.zeros(0, np.float32), seq=self.batches - 1,
                           extra={"barrier": self.barrier_id, PASS_KEY: self.pass_id, "final": final})
        timeout_ms = None if deadline_s is None else int(deadline_s * 1000)
        if not send(self.output, msg, self.waiting, timeout_ms=timeout_ms):
            return  # stopping: the committed position stands, and a restart resumes there
        if len(self._outstanding) >= MAX_OUTSTANDING_BARRIERS:
            self._outstanding.pop(min(self._outstanding))
        self._outstanding[self.barrier_id] = SavedPosition(self.source.position, self.frames, self.batches, ended=final,
                                                           barrier=self.barrier_id, pass_id=self.pass_id)
        self._barrier_at = self.batches
        self._barrier_sent_s = time.monotonic()
        if final:
            self._final = (self.barrier_id, time.monotonic())

    def _take_acks(self, timeout_ms: int = 0) -> None:
        while self.control is not None and (msg := self.control.recv(timeout_ms)) is not None:
            timeout_ms = 0
            if msg.kind == "control" and msg.extra.get("command") in ("ack", GAP_NOTICE):
                self._on_control(msg)
            else:
                self.dropped["control"] += 1  # a valid message, but no acknowledgement

    def _on_control(self, msg: wire.Message) -> None:
        self._on_ack(msg) if msg.extra.get("command") == "ack" else self._on_gap(msg)

    def _on_gap(self, msg: wire.Message) -> None:
        """A layer's notice that a batch sent under the current replay token never reached it (it restarted, or a link
        dropped what was queued): rewind now rather than at the next barrier's acknowledgement. A notice about batches
        sent before the last rewind or restart (another token) is answered already."""
        upto = msg.extra.get("upto")
        if msg.extra.get(PASS_KEY) != self.pass_id or not isinstance(msg.extra.get(REPLAY_KEY), str) or not wire.is_int(upto):
            self.dropped["gap_notice"] += 1
            return
        self.gap_notices += 1
        if upto + 1 < self.committed.batches:
            return  # a replay from the commit cannot fill it (that layer lost its checkpoint): no rewind storm; barriers report it
        if msg.extra[REPLAY_KEY] == self.replay and self._stop_requested is None and not self.ended:
            self._rewind(f"{msg.stream or 'a layer'} misses batches after {msg.extra.get('upto')}")

    def _on_ack(self, msg: wire.Message) -> None:
        """The sink's word on a barrier: complete (every layer has learned everything before it: commit there) or not
        (a layer misses batches, lost with a worker that restarted: rewind to the last commit and replay)."""
        barrier, complete = msg.extra.get("barrier"), msg.extra.get("complete")
        if (msg.extra.get(PASS_KEY) != self.pass_id or not wire.is_int(barrier) or not isinstance(complete, bool)):
            self.dropped["ack"] += 1
            return
        self.acks += 1
        if complete:
            saved = self._outstanding.get(barrier)
            if saved is None:
                return  # from before a rewind or a restart, or a repeat: what it covered is committed or replayed
            for done in [b for b in self._outstanding if b <= barrier]:
                del self._outstanding[done]
            self.committed = saved
            self._rewinds_since_commit = 0
            self.positions.save(saved)
            if saved.ended:
                self._end()
        elif self._stop_requested is not None:
            self._outstanding.pop(barrier, None)  # stopping: no rewind; the last commit stands (_stop_with_barrier)
        elif barrier > self._rewound_after:
            behind = msg.extra.get("behind")
            layers = f"layers {behind[:8]}" if isinstance(behind, list) and behind and all(wire.is_int(i) for i in behind) else "a layer"
            self._rewind(f"barrier {barrier} is incomplete ({layers} lost batches)")

    def _rewind(self, why: str) -> None:
        committed = self.committed
        self._rewinds_since_commit += 1
        if self._rewinds_since_commit > MAX_FRUITLESS_REWINDS:
            raise GaveUp(f"{why}, after {MAX_FRUITLESS_REWINDS} replays from batch {committed.batches}: a layer's checkpoint is "
                         "older than the source's commit (replaced or lost?); restore the checkpoints, or start afresh without them")
        self.log.warning("%s; replaying from batch %d", why, committed.batches)
        self.replay = uuid.uuid4().hex[:8]  # notices about what was sent so far are answered by this rewind
        self.source.seek(committed.position)
        self._iter = iter(self.source)
        self._forget_previous()
        self.frames, self.batches = committed.frames, committed.batches
        self._outstanding.clear()
        self._rewound_after = self.barrier_id  # barriers already sent come back incomplete too: one rewind serves them all
        self._barrier_at = self.batches
        self._final = None
        self.rewinds += 1

    def _stop_with_barrier(self) -> None:
        """Ctrl-C of a file stream: no more frames; a barrier after the last batch sent, and its acknowledgement awaited
        (bounded), so that the committed position is exactly where the stream stopped. Without it (a dead sink, a
        worker that lost batches) the last acknowledged barrier stands, and a resumed run replays from there."""
        waited = time.monotonic() - self._stop_requested
        if self._stop_barrier is None and self._final is None:
            if self.batches > self.committed.batches and waited < STOP_ACK_WAIT_S:
                self._barrier(deadline_s=STOP_ACK_WAIT_S - waited)
                self._stop_barrier = self.barrier_id if self.barrier_id in self._outstanding else None
            if self._stop_barrier is None:  # nothing sent since the last commit, or the barrier could not be sent
                self.stop_barrier_acked = self.batches == self.committed.batches
                self.finished = True
                return
            self.log.info("stopping: barrier %d after batch %d; waiting up to %.0f s for its acknowledgement", self._stop_barrier,
                          self.batches - 1, STOP_ACK_WAIT_S)
        wanted = self._stop_barrier if self._stop_barrier is not None else self._final[0]
        self._take_acks(POLL_MS)
        if self.committed.barrier >= wanted:
            self.stop_barrier_acked = True
            self.finished = True
            self.log.info("stopped at batch %d, committed", self.committed.batches)
        elif wanted not in self._outstanding or waited > STOP_ACK_WAIT_S:
            # came back incomplete (a rewind was not taken: we are stopping), or never came
            self.stop_barrier_acked = False
            self.finished = True
            self.log.warning("the stop barrier %d was not acknowledged complete; a resumed run replays from batch %d",
                             wanted, self.committed.batches)

    def _await_final(self) -> None:
        """The stream has run out; its final barrier waits for the acknowledgement: sent again now and then, bounded."""
        now = time.monotonic()
        if now - self._end_started > self.end_ack_deadline_s:
            raise GaveUp(f"the end of the stream (barrier {self._final[0]}) was not acknowledged within {self.end_ack_deadline_s:.0f} s; "
                         f"giving up (a resumed run replays from batch {self.committed.batches})")
        if now - self._final[1] > FINAL_BARRIER_RESEND_S:
            self.log.warning("no acknowledgement of the final barrier %d after %.0f s; sending it again", self._final[0], FINAL_BARRIER_RESEND_S)
            self._barrier(final=True)

    def _save_position(self) -> None:
        """The oldest of the last batches: everything before it has left this process."""
        if self._sent:
            self.positions.save(self._sent[0])
        self._position_saved_at = time.monotonic()

    def on_close(self) -> None:
        if self.positions is not None and not self.ended and not self.exactly_once:
            self._save_position()  # exactly-once: the committed position (the last acknowledged barrier) stands
        self.source.close()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(
            frames=self.frames,
            batches=self.batches,
            total=self.total,
            fps=self.fps.get(),
            live=self.source.live,
            dropped=self.source.dropped + self.send_drops,
            bad_frames=self.source.bad_frames,
            subscribers=self.subscribers,
            pauses=self.pauses,
            resume_timeouts=self.resume_timeouts,
            bad_messages=self.dropped["control"] + (sum(self.control.rejected.values()) if getattr(self, "control", None) else 0),
            ended=self.ended,
            stream_sent=self._final is not None,  # exactly-once: the stream ran out; its final barrier awaits the acknowledgement
            resumed_from=self.resumed_from,
            exactly_once=self.exactly_once,
            barriers=self.barriers,
            acks=self.acks,
            rewinds=self.rewinds,
            gap_notices=self.gap_notices,
            stop_barrier_acked=self.stop_barrier_acked,
            committed_batches=self.committed.batches if self.committed else None,
        )
        return m

    def __repr__(self) -> str:
        return f"<SourceWorker {self.source.name} frames={self.frames}/{self.total}>"
