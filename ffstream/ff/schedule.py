"""How a layer's learning rate falls with the frames (rows) it has learned."""

from __future__ import annotations

from dataclasses import dataclass

MIN_LR_SCALE = 0.01  # a linear decay stops here, so that a stream running past its expected end still learns a little


def linear_decay(frames_seen: int, decay_frames: int) -> float:
    """The learning-rate scale after frames_seen of decay_frames: 1 at the start, falling linearly."""
    return max(MIN_LR_SCALE, 1.0 - frames_seen / decay_frames)


@dataclass(frozen=True)
class RateSchedule:
    """The learning-rate scale after a number of learned frames.

    A stream of known length decays linearly over it (decay_frames), as training on a fixed set does. A stream with no
    known end (a camera, a long video) halves its rate every half_life frames, down to floor: at a constant rate a long
    stream learned in order wears down what its first frames built (moving Fashion-MNIST, 90k frames: 76.36 % constant,
    81.34 % halving every 50k frames to 0.1; BENCHMARKS.md, "A rate for a stream with no end").
    """

    decay_frames: int | None = None  # the stream's known length; None: no linear decay
    half_life: int | None = None  # frames per halving when there is no linear decay; None: a constant rate
    floor: float = 0.1  # the lowest scale the halving reaches: the layer keeps learning, slowly

    def scale(self, frames: int) -> float:
        if self.decay_frames:
            return linear_decay(frames, self.decay_frames)
        if self.half_life:
            return max(self.floor, 0.5 ** (frames / self.half_life))
        return 1.0
