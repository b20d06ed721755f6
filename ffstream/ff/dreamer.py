"""Making a batch of negatives from a batch of real frames: what the sleep worker, and the reference, do."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ffstream.ff.labels import embed_label
from ffstream.ff.negative_kinds import NEGATIVE_KINDS, PAIRED_KINDS, UNLABELLED_KINDS, check_labelled  # noqa: F401 - re-exported
from ffstream.ff.negatives import hard_wrong_labels, hybrid, random_wrong_labels
from ffstream.ff.pairs import Reservoir as RecentFrames
from ffstream.ff.pairs import cross_pairs
from ffstream.ff.readout import LinearReadout
from ffstream.ff.stack import FFStack

SCFF_MIN_AGE = 64  # frames: an scff partner is never one of the newest this many (most likely the current clip)
Head = tuple[LinearReadout, Sequence[int]]  # a softmax head and the 0-based layers whose activity it reads


class Reservoir:
    """A bounded sample of the frames seen so far (reservoir sampling: every frame equally likely to stay)."""

    def __init__(self, capacity: int, generator: np.random.Generator):
        self.capacity = capacity
        self.rng = generator
        self.frames: np.ndarray | None = None  # (capacity, C, H, W) float32
        self.size = 0
        self.seen = 0

    def add(self, batch: np.ndarray) -> None:
        if self.frames is None:
            self.frames = np.empty((self.capacity, *batch.shape[1:]), np.float32)
        for row in batch:
            if self.size < self.capacity:
                self.frames[self.size] = row
                self.size += 1
            else:
                slot = self.rng.integers(0, self.seen + 1)
                if slot < self.capacity:
                    self.frames[slot] = row
            self.seen += 1

    def sample(self, n: int) -> np.ndarray:
        return self.frames[self.rng.integers(0, self.size, n)]


class Dreamer:
    """Turns real frames into negative inputs for layer 1.

    "random"/"hard": the same frames with a wrong label, hard ones sampled from
    the model's own predictions (the softmax head's, on the snapshot's neutral
    pass: one forward pass instead of one per label); "hybrid": each frame
    blended with a frame from the reservoir through the paper's blurred mask; "scff" (self-contrastive pairs, for a
    layer that sees two frames stacked): each frame beside a frame at least SCFF_MIN_AGE frames older, drawn from a
    ring of the last `reservoir` frames, (B, 2C, H, W). Until the ring holds that many, the partner is whatever of it
    is oldest-at-hand (any held frame; the batch itself, reversed, for the very first), so that no positive waits.
    "temporal" (for the same paired layer): real frames out of their time order. Half the rows are the positive's
    two frames swapped, [x_t, x_{t-1}] against the source's [x_{t-1}, x_t]; the other half are scff's pairs.
    """

    def __init__(self, kind: str, num_classes: int | None, reservoir: int = 4096, seed: int = 0):
        if kind not in NEGATIVE_KINDS:
            raise ValueError(f"negatives must be one of {NEGATIVE_KINDS}, got {kind!r}")
        check_labelled(kind, labelled=bool(num_classes))
        self.kind = kind
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(seed)
        self.reservoir = Reservoir(reservoir, np.random.default_rng(seed))
        # scff: a ring of the newest frames in order, since a partner's age counts (capacity above the minimum age)
        paired = kind in PAIRED_KINDS
        self.recent = RecentFrames(max(reservoir, SCFF_MIN_AGE + 1), seed=seed + 1, min_age=SCFF_MIN_AGE) if paired else None

    def observe(self, batch: np.ndarray) -> None:
        """batch: (B, C, H, W) real frames, remembered for hybrids. Call it after `negatives` for that batch."""
        if self.recent is not None:
            self.recent.add(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
            return
        self.reservoir.add(batch)

    def negatives(self, batch: np.ndarray, labels: list[int] | None, stack: FFStack, head: Head | None = None) -> torch.Tensor:
        """(B, C, H, W) real frames -> (B, D) negative inputs for layer 1.

        stack: the snapshot of the layers; head: the softmax head and the layers it reads. Without
        a head yet, hard negatives fall back to goodness over all labels (energy), which costs K passes.
        """
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
        if self.kind == "scff":
            return cross_pairs(x, self.partners(x)).flatten(1)
        if self.kind == "temporal":
            return self.out_of_order(x).flatten(1)
        if self.kind == "hybrid":
            # Partners come from earlier batches: a video frame blended with itself or its neighbour
            # is nearly real, and teaches the layers nothing. The very first batch pairs its two halves.
            earlier = self.reservoir.sample(len(batch)) if self.reservoir.size else np.roll(batch, len(batch) // 2, axis=0)
            partner = torch.from_numpy(np.ascontiguousarray(earlier))
            return hybrid(x, partner, self.generator).flatten(1)
        flat = x.flatten(1)
        true = torch.tensor(labels)
        if self.kind == "hard":
            if head is not None:
                readout, layers = head
                with torch.no_grad():
                    scores = readout(stack.readout_features(flat, self.num_classes, layers))
            else:
                scores = stack.label_scores(flat, self.num_classes)
            wrong = hard_wrong_labels(true, scores, self.generator)
        else:
            wrong = random_wrong_labels(true, self.num_classes, self.generator)
        return embed_label(flat, wrong, self.num_classes, stack.label_scale, stack.label_relative)

    def out_of_order(self, x: torch.Tensor) -> torch.Tensor:
        """temporal: x (B, C, H, W) in time order -> (B, 2C, H, W), half the rows [x_t, x_{t-1}] (time reversed), the
        others [x_t, a frame of another time]. The stream's first frame has no predecessor: always the other kind."""
        ring = self.recent
        newest = ring.frames[(ring.count - 1) % ring.capacity][None] if ring.count else None  # the last batch's last frame
        before = torch.cat([x[:1] if newest is None else newest, x[:-1]])
        reversed_ok = torch.rand(len(x), generator=self.generator) < 0.5
        if newest is None:
            reversed_ok[0] = False  # [x_0, x_0] would be the positive itself
        return torch.where(reversed_ok.view(-1, 1, 1, 1), cross_pairs(x, before), cross_pairs(x, self.partners(x)))

    def partners(self, x: torch.Tensor) -> torch.Tensor:
        """scff: for x (B, C, H, W), a frame of another time for each, (B, C, H, W)."""
        ring = self.recent
        if ring.ready():
            return ring.sample(len(x))
        if ring.count == 0:
            return x.flip(0)  # the very first batch: its frames beside each other in reverse (a lone frame beside itself)
        held = min(ring.count, ring.capacity)
        ages = torch.randint(0, held, (len(x),), generator=self.generator)  # the stream's start: any frame held
        return ring.frames[(ring.count - 1 - ages) % ring.capacity]

    @property
    def size(self) -> int:
        """Frames held for negatives."""
        return min(self.recent.count, self.recent.capacity) if self.recent is not None else self.reservoir.size
