"""A built-in labelled video: one moving shape at a time, its class the label.

Every 20-40 frames a new shape (square, disc, triangle or cross) appears with a random size, colour,
velocity and spin; it moves at constant velocity and bounces off the borders, over a flat background
with Gaussian noise. Seeded, so a run can be replayed exactly, and cheap (thousands of frames/s).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ffstream.sources.base import Frame, FrameSource, Position
from ffstream.sources.preprocess import Preprocess

SHAPES = ("square", "disc", "triangle", "cross")
BASE_SIDE = 64  # canvas side in pixels when the output is smaller; drawn here, then resized
SUBPIXEL_BITS = 4  # cv2 draws at 1/16 pixel so slow motion stays smooth
# "synthetic" without ":N": finite, so progress bars know the total; the video recipe's probe peaks near 30k (BENCHMARKS.md)
DEFAULT_FRAMES = 30_000


@dataclass
class _Shape:
    kind: int  # index into SHAPES, also the label
    x: float  # centre, canvas pixels
    y: float
    vx: float  # velocity, canvas pixels per frame
    vy: float
    radius: float  # circumradius, canvas pixels
    angle: float  # radians
    spin: float  # radians per frame
    color: tuple[int, ...]  # 1 grey level or 3 RGB values, 0..255
    background: tuple[int, ...]  # same layout as color
    frames_left: int  # frames until the next shape replaces this one

    def step(self, side: int) -> None:
        self.x, self.vx = _bounce(self.x + self.vx, self.vx, self.radius, side - 1 - self.radius)
        self.y, self.vy = _bounce(self.y + self.vy, self.vy, self.radius, side - 1 - self.radius)
        self.angle += self.spin
        self.frames_left -= 1


def _bounce(pos: float, vel: float, lo: float, hi: float) -> tuple[float, float]:
    """Reflect a position that left [lo, hi] back inside and flip the velocity."""
    if pos < lo:
        return 2 * lo - pos, -vel
    if pos > hi:
        return 2 * hi - pos, -vel
    return pos, vel


class SyntheticSource(FrameSource):
    """Moving shapes, labelled by shape class; `epochs` replays the same seeded clip."""

    live = False

    def __init__(
        self,
        preprocess: Preprocess,
        frames: int = DEFAULT_FRAMES,  # frames per epoch
        *,
        seed: int = 0,  # seeds shapes, motion and noise
        epochs: int = 1,  # how many times the clip is replayed
        segment: tuple[int, int] = (20, 40),  # inclusive range of frames one shape stays on screen
        noise: float = 8.0,  # std of the additive Gaussian pixel noise, grey levels
    ) -> None:
        if frames <= 0 or epochs <= 0:
            raise ValueError(f"frames and epochs must be positive, got {frames} and {epochs}")
        super().__init__(f"synthetic:{frames}", preprocess)
        self.frames_per_epoch = frames
        self.seed = seed
        self.epochs = epochs
        self.segment = segment
        self.noise = noise
        self.total = frames * epochs
        self.num_classes = len(SHAPES)
        self.side = max(BASE_SIDE, *preprocess.size)
        self.channels = preprocess.channels

    def identity(self) -> dict:
        """The clip is a function of these: the same ones replay the same frames."""
        return {"kind": "synthetic", "frames": self.frames_per_epoch, "seed": self.seed, "segment": list(self.segment), "noise": self.noise}

    def _frames(self) -> Iterator[Frame]:
        start = self.start
        index = start.epoch * self.frames_per_epoch + start.offset
        for epoch in range(start.epoch, self.epochs):
            rng = np.random.default_rng(self.seed)  # same seed every epoch: a replay, like a file
            shape = self._new_shape(rng)
            for offset in range(self.frames_per_epoch):
                if self._closed:
                    return
                if shape.frames_left <= 0:
                    shape = self._new_shape(rng)
                image = self._draw(shape, rng)  # drawn even when skipped: the noise comes from the same generator
                shape.step(self.side)
                if epoch == start.epoch and offset < start.offset:
                    continue
                self.position = Position(epoch, offset + 1)
                yield Frame(self.preprocess(image), shape.kind, index, time.time())
                index += 1

    def _new_shape(self, rng: np.random.Generator) -> _Shape:
        side = self.side
        radius = side * rng.uniform(0.12, 0.25)
        speed = side * rng.uniform(0.01, 0.04)
        heading = rng.uniform(0, 2 * math.pi)
        bright = rng.integers(140, 256, size=self.channels)
        dark = rng.integers(0, 70, size=self.channels)
        if self.channels == 3:
            # keep a random hue but guarantee the shape is brighter than the background on average
            bright = np.maximum(bright - rng.integers(0, 120, size=3), dark + 60)
        return _Shape(
            kind=int(rng.integers(len(SHAPES))),
            x=rng.uniform(radius, side - 1 - radius),
            y=rng.uniform(radius, side - 1 - radius),
            vx=speed * math.cos(heading),
            vy=speed * math.sin(heading),
            radius=radius,
            angle=rng.uniform(0, 2 * math.pi),
            spin=rng.uniform(-0.08, 0.08),
            color=tuple(int(c) for c in bright),
            background=tuple(int(c) for c in dark),
            frames_left=int(rng.integers(self.segment[0], self.segment[1] + 1)),
        )

    def _draw(self, s: _Shape, rng: np.random.Generator) -> np.ndarray:
        """One (side, side) grey or (side, side, 3) RGB uint8 canvas."""
        dims = (self.side, self.side) if self.channels == 1 else (self.side, self.side, 3)
        canvas = np.empty(dims, dtype=np.uint8)
        canvas[...] = s.background
        color = s.color if self.channels == 3 else s.color[0]
        fixed = 1 << SUBPIXEL_BITS
        name = SHAPES[s.kind]
        if name == "disc":
            centre = (round(s.x * fixed), round(s.y * fixed))
            cv2.circle(canvas, centre, round(s.radius * 0.85 * fixed), color, -1, cv2.LINE_AA, SUBPIXEL_BITS)
        elif name == "square":
            self._fill(canvas, _polygon(s.x, s.y, s.radius, s.angle, 4), color)
        elif name == "triangle":
            self._fill(canvas, _polygon(s.x, s.y, s.radius, s.angle, 3), color)
        else:  # cross: two bars at right angles, each a convex quad
            for a in (s.angle, s.angle + math.pi / 2):
                self._fill(canvas, _bar(s.x, s.y, s.radius, s.radius / 3, a), color)
        if self.noise > 0:
            noisy = canvas + rng.standard_normal(dims, dtype=np.float32) * np.float32(self.noise)
            canvas = np.clip(noisy, 0, 255).astype(np.uint8)
        return canvas

    @staticmethod
    def _fill(canvas: np.ndarray, points: np.ndarray, color) -> None:
        fixed = np.round(points * (1 << SUBPIXEL_BITS)).astype(np.int32)
        cv2.fillConvexPoly(canvas, fixed, color, cv2.LINE_AA, SUBPIXEL_BITS)


def _polygon(x: float, y: float, r: float, angle: float, corners: int) -> np.ndarray:
    """Regular polygon, (corners, 2) canvas coordinates."""
    a = angle + np.arange(corners) * (2 * math.pi / corners)
    return np.stack([x + r * np.cos(a), y + r * np.sin(a)], axis=1)


def _bar(x: float, y: float, half_len: float, half_width: float, angle: float) -> np.ndarray:
    """Rectangle centred on (x, y), long axis at `angle`, (4, 2) canvas coordinates."""
    c, s = math.cos(angle), math.sin(angle)
    corners = [(half_len, half_width), (-half_len, half_width), (-half_len, -half_width), (half_len, -half_width)]
    return np.array([(x + u * c - v * s, y + u * s + v * c) for u, v in corners])
