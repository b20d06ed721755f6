"""The recurrent network's config (ff/recurrent.py): read and checked without torch."""

from __future__ import annotations

from dataclasses import dataclass

# Static images: the source interleaves this many batches' steps (A1 B1 A2 B2 ...), so that while a layer works on
# one batch's step the layer above works on the other's, and each layer hears the one above one step late.
INTERLEAVED_BATCHES = 2
DAMPING = 0.3  # the paper: new = 0.3·old + 0.7·computed


@dataclass(frozen=True)
class RecurrentConfig:
    iterations: int = 8  # static images: how many times each image goes through the network (the paper: 8)
    window: tuple[int, int] = (3, 5)  # 1-based iterations, inclusive, whose goodness is summed to classify (the paper: 3–5)
    damping: float = DAMPING  # share of the old state kept at each step

    def __post_init__(self) -> None:
        first, last = self.window
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if not 1 <= first <= last <= self.iterations:
            raise ValueError(f"window must be 1 <= first <= last <= iterations ({self.iterations}), got {self.window}")
        if not 0.0 <= self.damping < 1.0:
            raise ValueError(f"damping must be in [0, 1), got {self.damping}")

    @property
    def steps(self) -> range:
        """The 0-based steps of the window."""
        return range(self.window[0] - 1, self.window[1])
