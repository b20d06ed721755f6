"""What each worker is handed to run: endpoints, batching and the sleep plan.

Config builds these; workers take them. They live here, not beside their workers, so that config never
imports a worker (the arrows point down: workers import config).
"""

from __future__ import annotations

from dataclasses import dataclass

LIVE_MAX_HELD = 128  # held positive messages with forward_first or scheduled learning (default Pairing: 16); rows (B, D) each, so small at batch 1


@dataclass(frozen=True)
class LayerEndpoints:
    input: str  # PULL, bound: frames or activity from below
    output: str  # PUSH, connected: the next layer's input or the sink's
    negative: str  # PULL, bound: negative updates from the sleep worker
    snapshot: str  # REP, bound: answers the sleep worker's snapshot requests
    negative_output: str | None = None  # PUSH, connected: the next layer's negative socket (sleep.route "chain"); None: no chaining


@dataclass(frozen=True)
class Batching:
    max_rows: int = 64  # rows per micro-batch; messages are merged up to this
    max_wait_ms: float = 0.0  # how long to wait for more messages before a short batch runs
    # Live video: forward frames that queue up first and learn on them afterwards, merged into fewer, larger
    # steps (lower latency, fewer steps per frame). Off: one step per micro-batch, as the in-process reference.
    forward_first: bool = False
    # Live video, learning on a schedule instead of on arrival: every frame's activity goes on at once (forward
    # only, and also between the passes of a step), its rows are held until their paired negatives are in, and the
    # layer takes one step on all ready rows once learn_every_rows are ready, or learn_every_ms after its last step
    # if any are. Steps per second are then at most fps / learn_every_rows + 1000 / learn_every_ms, whatever the
    # arrival rate. Needs paired negatives. Nothing is stored beyond the held rows: at most LIVE_MAX_HELD messages
    # (B, D) and their negatives; past that the oldest step alone. 0 and 0: off.
    learn_every_rows: int = 0  # rows per scheduled step; 0: no row trigger
    learn_every_ms: float = 0.0  # ms after the last step at which whatever is ready steps; 0: no time trigger

    @property
    def scheduled(self) -> bool:
        return self.learn_every_rows > 0 or self.learn_every_ms > 0


UPDATE_FORMS = ("inputs", "gradient")
ROUTES = ("snapshot", "chain")


@dataclass(frozen=True)
class SleepPlan:
    negatives: str = "random"  # "random" or "hard" wrong labels (supervised), "hybrid" frames (unsupervised)
    sleep_every: int = 10  # refresh the snapshot every this many wake batches; 1 is the freshest
    reservoir: int = 4096  # raw frames kept for hybrids
    snapshot_timeout_ms: int = 2000  # a layer that does not answer in this time is asked again later
    # What each layer is sent: "inputs", its negative inputs from the snapshot of the layers below, whose
    # gradient the layer takes on its current weights; or "gradient", the gradient taken on the snapshot.
    # Stale gradients overshoot once the live weights have moved on (see BENCHMARKS.md), so "inputs" is the default.
    update: str = "inputs"
    phased: bool = False  # collect sleep_every wake batches while the source runs, then sleep on them while it waits
    # How negatives reach layers 2..L: "snapshot", through the sleep worker's snapshot of the layers below (above);
    # "chain", only layer 1 gets them from here, and each layer passes its own normalised activity on the negatives
    # up at its paired step, as the interleaved reference does. Chaining needs no snapshot (except for "hard"
    # negatives, which read the head) and no second forward pass here.
    route: str = "snapshot"

    def __post_init__(self) -> None:
        from ffstream.ff.negative_kinds import NEGATIVE_KINDS  # torch-free

        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, got {self.route!r}")
        if self.route == "chain" and (self.update != "inputs" or self.phased):
            raise ValueError("route 'chain' needs update 'inputs' and no phased sleep")
        if self.update not in UPDATE_FORMS:
            raise ValueError(f"update must be one of {UPDATE_FORMS}, got {self.update!r}")
        if self.negatives not in NEGATIVE_KINDS:
            raise ValueError(f"negatives must be one of {NEGATIVE_KINDS}, got {self.negatives!r}")
        if self.sleep_every < 1:
            raise ValueError(f"sleep_every must be at least 1, got {self.sleep_every}")
