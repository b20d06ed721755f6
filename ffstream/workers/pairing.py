"""Pairing each positive micro-batch with the negatives made from the same frames.

FF learns the difference between a positive and a negative gradient, and that
difference is clearest when both come from the same images in one step (the
interleaved reference). In the pipeline the sleep worker's negatives for batch
t arrive a few batches after the layer has seen batch t. Stepping on them with
whatever positive comes next cost 15-20 points of accuracy at 15k frames (see
BENCHMARKS.md), so a layer passes the activity on at once but holds the batch's
inputs (B, D) until the negatives for the same source batches arrive, then takes
both gradients on the weights of that moment, exactly as the reference does.
(Holding the inputs, not the gradient, keeps a weight-sized tensor per waiting
batch out of memory, for the price of one more forward pass.) Nothing waits
forever: a positive held past `hold_s` is stepped alone, and a negative whose
positive is gone joins the next step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class HeldPositive:
    seqs: frozenset[int]  # the source batches in this micro-batch
    inputs: torch.Tensor  # (B, D) the positive micro-batch
    since: float
    labels: torch.Tensor | None = None  # (B,) targets, for layers that learn from them (channel-wise competition)


def merged(held: list[HeldPositive]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Held positives as one step's inputs (B, D) and labels (B,) (None where they carry none)."""
    inputs = torch.cat([h.inputs for h in held])
    return inputs, None if held[0].labels is None else torch.cat([h.labels for h in held])


@dataclass
class Pairing:
    hold_s: float = 10.0  # the longest a positive gradient waits for its negatives (a dead sleep worker costs this delay)
    max_held: int = 16  # and the most that wait at once
    clock: Callable[[], float] = time.monotonic
    held: list[HeldPositive] = field(default_factory=list)
    negatives: dict[int, tuple[torch.Tensor, float]] = field(default_factory=dict)  # seq -> (inputs (B, D), arrival)
    paired: int = 0
    unpaired_positives: int = 0
    unpaired_negatives: int = 0

    def add_positive(self, seqs: list[int], inputs: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self.held.append(HeldPositive(frozenset(seqs), inputs, self.clock(), labels))

    def held_state(self) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
        """The held positives for a barrier's checkpoint, which then needs not step them first: their inputs and labels
        by position (copies), and each one's source seqs."""
        tensors = {}
        for i, held in enumerate(self.held):
            tensors[f"{i}.inputs"] = held.inputs.detach().cpu().clone()
            if held.labels is not None:
                tensors[f"{i}.labels"] = held.labels.detach().cpu().clone()
        return tensors, [sorted(held.seqs) for held in self.held]

    def restore_held(self, tensors: dict[str, torch.Tensor], seqs: list[list[int]], device: torch.device) -> int:
        """Held positives from a checkpoint (held_state), due at once: the negatives made for them went to the process
        that held them, and a rewind replays only what came after the barrier. Returns how many."""
        due = self.clock() - self.hold_s - 1.0
        for i, held_seqs in enumerate(seqs):
            inputs, labels = tensors.get(f"{i}.inputs"), tensors.get(f"{i}.labels")
            if inputs is not None:
                self.held.append(HeldPositive(frozenset(held_seqs), inputs.to(device), due, None if labels is None else labels.to(device)))
        return len(self.held)

    def add_negative(self, seq: int, inputs: torch.Tensor) -> None:
        self.negatives[seq] = (inputs, self.clock())

    def take_if_ready(self, seqs: list[int]) -> list[tuple[int, torch.Tensor]] | None:
        """The (seq, negatives) of a positive that has just arrived, when all are in and no older positive waits.

        Then the layer steps at once, on the same forward pass that gives the activity it sends on.
        """
        if self.held or not all(s in self.negatives for s in seqs):
            return None
        self.paired += 1
        return [(s, self.negatives.pop(s)[0]) for s in sorted(set(seqs))]

    def ready_rows(self) -> int:
        """Rows of the held positives whose negatives have all arrived (what a step would take now)."""
        return sum(len(h.inputs) for h in self.held if all(s in self.negatives for s in h.seqs))

    def held_rows(self) -> int:
        """Rows of every held positive, their negatives in or not."""
        return sum(len(h.inputs) for h in self.held)

    def ready(self) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Held positives whose negatives have all arrived, each with those negatives, oldest first."""
        return [(held.inputs, [n for _, n in negatives]) for held, negatives in self.ready_by_seq()]

    def ready_by_seq(self) -> list[tuple[HeldPositive, list[tuple[int, torch.Tensor]]]]:
        """As `ready`, with the held positive's labels and each negative batch's source seq."""
        out = []
        for item in list(self.held):
            if all(s in self.negatives for s in item.seqs):
                self.held.remove(item)
                out.append((item, [(s, self.negatives.pop(s)[0]) for s in sorted(item.seqs)]))
                self.paired += 1
        return out

    def expired(self) -> tuple[list[HeldPositive], list[torch.Tensor]]:
        """Positives that waited too long (to step alone) and negatives whose positives are gone."""
        now = self.clock()
        late = [h for h in self.held if now - h.since > self.hold_s]
        late += self.held[: max(0, len(self.held) - len(late) - self.max_held)]
        for h in late:
            self.held.remove(h)
        waiting = set().union(*(h.seqs for h in self.held)) if self.held else set()
        oldest_wanted = min(waiting) if waiting else None
        orphans = [s for s, (_, t) in self.negatives.items() if s not in waiting and (now - t > self.hold_s or (oldest_wanted is not None and s < oldest_wanted))]
        self.unpaired_positives += len(late)
        self.unpaired_negatives += len(orphans)
        return late, [self.negatives.pop(s)[0] for s in orphans]
