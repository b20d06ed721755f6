"""Source worker: reads frames, batches them, and feeds layer 1 and the sleep worker."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
import zmq

from ffstream.net import wire
from ffstream.net.transport import POLL_MS, Receiver, send, try_send
from ffstream.sources import FrameSource, Position
from ffstream.workers.base import Worker
from ffstream.workers.source_position import PositionStore, SavedPosition
from ffstream.workers.stats import Rate

RESUME_TIMEOUT_S = 60.0  # phased sleep: the longest the source waits for the sleep worker before waking anyway
# Batches that may still sit in this process's send queue (high-water mark 4, plus the one being written, plus
# a spare; an eval copy makes a batch two messages). A kill -9 loses them, so the saved position stays this
# many batches behind what was sent: a restart replays a few frames rather than losing any.
IN_FLIGHT_BATCHES = 6


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
        self.pauses = 0
        self.resume_timeouts = 0
        self._paced_from: float | None = None  # monotonic time of the first paced frame
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
        if self.positions is not None:
            self._resume()

    def _resume(self) -> None:
        """Start where the saved position says (a restart), with the counters it had, so seqs and max_frames carry on."""
        saved = self.positions.load()
        if saved is None:
            return
        self.source.seek(saved.position)
        self._iter = iter(self.source)
        self.frames, self.batches, self.resumed_from = saved.frames, saved.batches, saved.frames
        self._sent.append(saved)
        self.log.info("resuming %s at frame %d (pass %d, frame %d of it) from %s", self.source.name, saved.frames,
                      saved.position.epoch, saved.position.offset, self.positions.path)
        if saved.ended:
            self._iter = iter(())  # a restart after the end: nothing to replay, the end marker goes again

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
        if self.phase_length and self.control_addr:
            self.control = Receiver(self.socket(zmq.PULL, bind=self.control_addr, hwm=4), name="source.control")

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

    def step(self) -> None:
        if self.ended:
            self._stop.wait(POLL_MS / 1000)  # idle: what is queued downstream is still being delivered
            return
        if self.rate_fps and not self._pace():
            return
        group = self._next_group()
        if not group:
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
        n = self.iterations
        for step in range(n):
            # Recurrent static images: the header says which batch ("frame") and which iteration of it ("step") this is.
            # Interleaved batches keep a pipeline of layers busy while each layer hears the one above one
            # step late on every batch when they keep pace: the layer above works on the other batch's step meanwhile.
            for index, pixels, labels, t_src in batches:
                extra = {"frame": index, "step": step, "iterations": n} if n > 1 else {}
                if labels is not None and self.eval_every and index % self.eval_every == 0 and step < self.eval_steps:
                    self._emit(wire.Message("frames", pixels, seq=index * n + step, t_src=t_src, label=labels, mode="eval", extra=extra))
                self._emit(wire.Message("frames", pixels, seq=index * n + step, t_src=t_src, label=labels, extra=extra))
        phases_before = self.batches // self.phase_length if self.control is not None else 0
        for frames, position in group:
            self.batches += 1
            self.frames += len(frames)
            self.fps.add(len(frames))
            self._sent.append(SavedPosition(position, self.frames, self.batches))
        if self.positions is not None and time.monotonic() - self._position_saved_at >= self.position_every_s:
            self._save_position()
        if self.control is not None and self.batches // self.phase_length > phases_before:
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
            send(self.publisher, msg, lambda: self.stopping)

    def _await_resume(self) -> None:
        """Phased sleep: the wake phase is over; wait (bounded) while the network sleeps on it."""
        self.pauses += 1
        deadline = time.monotonic() + RESUME_TIMEOUT_S
        while not self.stopping and time.monotonic() < deadline:
            msg = self.control.recv(POLL_MS)
            if msg is not None and msg.kind == "control" and msg.extra.get("command") == "resume":
                return
            self.dropped["control"] += msg is not None  # a valid message, but not a resume
        if not self.stopping:
            self.resume_timeouts += 1
            self.log.warning("no resume from the sleep worker within %.0f s; waking anyway", RESUME_TIMEOUT_S)

    def _pace(self) -> bool:
        """Wait (interruptibly) until the next batch's last frame is due at rate_fps; False if stopped meanwhile.

        Frames are read after the wait, so their t_src is the simulated capture time and the sink's
        latency covers only the pipeline (plus, for batches over one frame, the wait to fill the batch).
        """
        now = time.monotonic()
        if self._paced_from is None:
            self._paced_from = now
        due = self._paced_from + (self.frames + self.batch - 1) / self.rate_fps
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
        elif not send(self.output, msg, lambda: self.stopping):
            self.send_drops += len(msg.array)

    def _end(self) -> None:
        """Tell everyone downstream that the stream is over, then stop."""
        end = wire.Message("control", np.zeros(0, np.float32), seq=self.batches, extra={"command": "end"})
        send(self.output, end, lambda: self.stopping, timeout_ms=5000)
        if self.publisher is not None:
            send(self.publisher, end, lambda: self.stopping, timeout_ms=5000)
        self.ended = True
        self.finished = self.exit_on_end
        self.log.info("end of stream after %d frames", self.frames)
        if self.positions is not None:
            self.positions.save(SavedPosition(self.source.position, self.frames, self.batches, ended=True))

    def _save_position(self) -> None:
        """The oldest of the last batches: everything before it has left this process."""
        if self._sent:
            self.positions.save(self._sent[0])
        self._position_saved_at = time.monotonic()

    def on_close(self) -> None:
        if self.positions is not None and not self.ended:
            self._save_position()
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
            resumed_from=self.resumed_from,
        )
        return m

    def __repr__(self) -> str:
        return f"<SourceWorker {self.source.name} frames={self.frames}/{self.total}>"
