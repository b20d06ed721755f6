"""The Python API: a trained stack, loaded from its checkpoint directory, used on numpy frames or a source.

>>> import ffstream
>>> stack = ffstream.load("ck")                       # doctest: +SKIP  (ffstream run --checkpoint-dir ck)
>>> feats = stack.embed(frames)                       # doctest: +SKIP  (N, F) float32, every layer side by side
>>> stack.goodness(frames).shape, stack.novelty(frames).shape   # doctest: +SKIP  (N, L), (N,)
>>> for batch in stack.iter_source("clip.mp4", max_frames=1000):  # doctest: +SKIP
...     batch.frames, stack.embed(batch.pixels, layer=2)

What the commands do, as functions (`ffstream score`, `ffstream eval` and `ffstream embed` only parse and print):

>>> scores = ffstream.score("ck", "clip.mp4")         # doctest: +SKIP  Scores: goodness (N, L), novelty (N,), ...
>>> ffstream.evaluate("ck", "fashion-mnist:test")     # doctest: +SKIP  {"accuracy_energy": ..., ...}
>>> ffstream.embed("ck", "clip.mp4").features         # doctest: +SKIP  Embedding: features, frame, time_s, label

Frames are numpy arrays: raw images (N, H, W) grey or (N, H, W, 3) RGB, uint8 (0..255) or float (already 0..1), of
any size, preprocessed as the run was (its size and colour); or (N, C, H, W) exactly the stack's frame shape, taken as
already preprocessed (float) or scaled only (uint8). The stack is the one `ffstream score` and `ffstream probe` read
(`load_scoring_stack`): feedforward layers, dense, conv or local; recurrent stacks are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ffstream.ff import FFStack
from ffstream.ff.checkpoint import CheckpointError, checkpoint_config, layer_path
from ffstream.offline import embed as embedding
from ffstream.offline.embed import Embedding
from ffstream.offline.evaluate import EVAL_BATCH
from ffstream.offline.evaluate import evaluate as evaluate_arrays
from ffstream.offline.prefetch import prefetched
from ffstream.offline.score import Scores, frame_goodness, load_scoring_stack, novelty, score_video, trained_preprocessing, write_csv
from ffstream.sources import Preprocess, SourceError, dataset_arrays, open_source

__all__ = ["Embedding", "Scores", "SourceBatch", "SourceFrames", "Stack", "embed", "evaluate", "load", "save_embedding", "save_scores", "score"]


@dataclass
class SourceBatch:
    """A run of consecutive frames from a source, preprocessed for the stack."""

    pixels: np.ndarray  # float32 (B, C, H, W): what layer 1 reads
    frames: np.ndarray  # int64 (B,): each frame's 0-based index in the stream
    times: np.ndarray  # float64 (B,): seconds from the start (index / frame rate; the index when the rate is unknown)
    labels: np.ndarray | None  # int64 (B,): each frame's class; None when the source has no labels


@dataclass
class SourceFrames(SourceBatch):
    """All the frames `Stack.from_source` read, in stream order (the same fields as a batch)."""


class Stack:
    """A trained feedforward stack and the preprocessing it was trained with; build it with `load`."""

    def __init__(self, stack: FFStack, meta: dict, preprocess: Preprocess, directory: str, batch: int = EVAL_BATCH):
        self.stack = stack  # the layers, weights loaded, in eval use only (no learning here)
        self.meta = meta  # layer 1's checkpoint metadata: frame_shape, task, num_classes, ...
        self.preprocess = preprocess  # size and colour of the run, from its checkpoint (checked against run.json)
        self.directory = directory  # where it was loaded from
        self.batch = batch  # rows per forward pass; bounds memory, not results
        # supervised stacks read a label written into the frame: the neutral one (1/K each) here, as when predicting
        self.input_classes: int | None = meta.get("num_classes") if meta.get("task") != "unsupervised" else None

    def __repr__(self) -> str:
        widths = [layer.cfg.width for layer in self.stack.layers]
        return f"<ffstream.Stack {self.directory!r} layers={widths} frame_shape={self.frame_shape}>"

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a preprocessed frame, as layer 1 reads it."""
        return self.preprocess.shape

    @property
    def num_layers(self) -> int:
        """L, the number of layers."""
        return len(self.stack)

    @property
    def thresholds(self) -> list[float]:
        """θ of each layer: the goodness it was trained to push real frames above ("max") or below ("min")."""
        return [float(layer.cfg.theta) for layer in self.stack.layers]

    def prepare(self, frames: np.ndarray) -> np.ndarray:
        """Numpy frames (see the module docstring) -> float32 (N, C, H, W) as the run's source would have made them."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"frames must be uint8 (0..255) or float (0..1), got {frames.dtype}")
        scale = self.preprocess.scale if frames.dtype == np.uint8 else 1.0  # floats are taken as already scaled
        if frames.ndim == 4 and tuple(frames.shape[1:]) == self.frame_shape:
            return np.ascontiguousarray(frames.astype(np.float32) * np.float32(scale))
        if frames.ndim == 4 and frames.shape[3] == 1:
            frames = frames[..., 0]  # (N, H, W, 1): grey
        if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[3] != 3):
            raise ValueError(f"expected frames (N, H, W), (N, H, W, 3) or (N, {', '.join(map(str, self.frame_shape))}), got shape {frames.shape}")
        if frames.dtype not in (np.uint8, np.float32):
            frames = frames.astype(np.float32)  # cv2 resizes uint8 and float32
        # the run's preprocessing whole (centring, SCFF's self-pairing), only the scale following the dtype
        return dataclasses.replace(self.preprocess, scale=scale).batch(frames)

    def embed(self, frames: np.ndarray, layer: int | Sequence[int] | None = None) -> np.ndarray:
        """Each frame's readout features: the normalised activity (a conv map pooled on a small grid) of `layer`
        (1-based), of several layers side by side, or of every layer when None. Returns float32 (N, F)."""
        layers = self._layers(layer)
        def features(pixels: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(pixels).flatten(1)  # (B, D)
            with torch.inference_mode():  # no autograd bookkeeping at all (no_grad still versions tensors)
                return self.stack.readout_features(x, self.input_classes, layers).float().numpy()

        return self._pass(frames, features)

    def goodness(self, frames: np.ndarray) -> np.ndarray:
        """Goodness of every frame at every layer, float64 (N, L), as `ffstream score` computes it (supervised
        stacks see the neutral label)."""
        return self._pass(frames, lambda pixels: frame_goodness(self.stack, pixels, self.input_classes))

    def novelty(self, frames: np.ndarray) -> np.ndarray:
        """Each frame's novelty as `ffstream score` defines it, float64 (N,): the mean over layers of (θ − G)/θ
        ("min" variant: (G − θ)/θ). Higher is less like what the stack learned; 0 is at every threshold."""
        return self.novelty_of(self.goodness(frames))

    def novelty_of(self, goodness: np.ndarray) -> np.ndarray:
        """Novelty (N,) from goodness (N, L) already computed (saves a second pass)."""
        return novelty(np.asarray(goodness, np.float64), self.thresholds, self.stack.layers[0].cfg.variant)

    def iter_source(self, spec: str, max_frames: int | None = None, batch: int | None = None,
                    labels: str | None = None) -> Iterator[SourceBatch]:
        """Batches of up to `batch` frames (default self.batch) of a source spec, preprocessed for this stack, in
        stream order (datasets unshuffled), stopping after `max_frames` or at the source's end (a live one: never).
        labels: a video file's label CSV instead of its same-stem sidecar. The source is read one batch ahead on
        another thread (offline/prefetch.py), so reading and the caller's work on the previous batch overlap."""
        if max_frames is not None and max_frames <= 0:
            raise SourceError(f"max_frames must be positive, got {max_frames}")
        return prefetched(lambda: self._read(spec, max_frames, batch or self.batch, labels))

    def from_source(self, spec: str, max_frames: int | None = None, labels: str | None = None) -> SourceFrames:
        """Every frame of a source spec (up to `max_frames`) in one `SourceFrames`; SourceError if it yields none."""
        batches = list(self.iter_source(spec, max_frames, labels=labels))
        if not batches:
            raise SourceError(f"no frames in {spec}")
        has_labels = batches[0].labels is not None
        return SourceFrames(
            pixels=np.concatenate([b.pixels for b in batches]),
            frames=np.concatenate([b.frames for b in batches]),
            times=np.concatenate([b.times for b in batches]),
            labels=np.concatenate([b.labels for b in batches]) if has_labels else None,
        )

    # the plumbing -------------------------------------------------------------------------------------------------
    def _layers(self, layer: int | Sequence[int] | None) -> list[int]:
        """1-based layer(s) -> 0-based indices; ValueError naming the range when one is out of it."""
        wanted = range(1, self.num_layers + 1) if layer is None else [layer] if isinstance(layer, (int, np.integer)) else list(layer)
        for n in wanted:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= self.num_layers:
                raise ValueError(f"layer {n!r} is not one of this stack's layers, 1..{self.num_layers}")
        return [int(n) - 1 for n in wanted]

    def _pass(self, frames: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """fn over the prepared frames (float32 (B, C, H, W)) in `self.batch` chunks, results stacked."""
        pixels = self.prepare(frames)
        if len(pixels) == 0:
            raise ValueError("no frames given")
        return np.concatenate([fn(pixels[i : i + self.batch]) for i in range(0, len(pixels), self.batch)])

    def _read(self, spec: str, max_frames: int | None, batch: int, labels: str | None) -> Iterator[SourceBatch]:
        """iter_source's reading, on the prefetch thread: the source is opened, read and closed there."""
        with open_source(spec, self.preprocess, labels=labels, shuffle=False) as src:
            labelled = src.num_classes is not None
            pending: list = []
            seen = 0
            for frame in src:
                pending.append(frame)
                seen += 1
                if len(pending) >= batch or seen == max_frames:
                    yield self._batch(pending, labelled, getattr(src, "frame_rate", None))
                    pending = []
                if seen == max_frames:
                    return
            if pending:
                yield self._batch(pending, labelled, getattr(src, "frame_rate", None))

    def _batch(self, frames: list, labelled: bool, rate: float | None) -> SourceBatch:
        index = np.fromiter((f.index for f in frames), np.int64, len(frames))
        return SourceBatch(
            pixels=np.stack([f.pixels for f in frames]),
            frames=index,
            times=index / rate if rate else index.astype(np.float64),
            labels=np.fromiter((f.label for f in frames), np.int64, len(frames)) if labelled else None,
        )


def load(directory: str | os.PathLike, batch: int = EVAL_BATCH) -> Stack:
    """The stack saved in a checkpoint directory (`ffstream run --checkpoint-dir DIR`), ready to embed and score.

    Preprocessing comes from the checkpoints' frame shape; when the directory holds the run's run.json, its stream
    size and colour must agree (CheckpointError otherwise, as for a missing or unusable directory)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint directory at {directory}")
    stack, meta, preprocess = load_scoring_stack(directory)
    if not isinstance(stack, FFStack):  # its layers also take the state from above: frames are steps, not rows
        raise CheckpointError(f"{directory} holds a recurrent stack; ffstream.load reads feedforward stacks (ffstream score reads both)")
    from ffstream.config import recorded

    run = recorded(directory)
    if run is not None and (tuple(run.stream.size) != preprocess.size or bool(run.stream.color) != preprocess.color):
        raise CheckpointError(f"{directory}: run.json says frames of {tuple(run.stream.size)} (color={run.stream.color}), "
                              f"the layer checkpoints {preprocess.size} (color={preprocess.color})")
    return Stack(stack, meta, preprocess, directory, batch)


def score(directory: str | os.PathLike, source: str | None = None, *, max_frames: int | None = None, batch: int = 256,
          labels: str | None = None, interruptible: bool = False) -> Scores:
    """Goodness of every frame of a source at every layer, and each frame's novelty, by the stack in `directory`
    (feedforward or recurrent): what `ffstream score` writes.

    source: any source spec, a video file or a live one (webcam:N, rtsp://..., an http:// MJPEG stream); None: the
    source the stack learned from, as its run.json records. max_frames: stop after this many (a live source without it
    reads until interrupted). interruptible: Ctrl-C ends the reading and the frames read so far are scored. A
    recurrent stack is also scored with its top-down input silenced: `Scores.without_top_down`."""
    spec = source if source is not None else _recorded_source(directory)
    scores, without = score_video(spec, directory, batch=batch, labels=labels, max_frames=max_frames, interruptible=interruptible)
    scores.without_top_down = without
    return scores


def save_scores(scores: Scores, path: str | os.PathLike) -> None:
    """Scores as CSV: frame, time_s, goodness_layer1..L, novelty (and label when the source has labels)."""
    write_csv(scores, path)


def evaluate(directory: str | os.PathLike, source: str | None = None, *, labels: str | None = None) -> dict:
    """Accuracy of the stack in `directory` on a labelled source, by energy and by its saved softmax head or probe:
    what `ffstream eval` prints. source: None takes the test split of the dataset the run learned from (its run.json).
    Returns {"n", "layers", "task", "accuracy_energy", "accuracy_softmax", ...}; a figure the stack cannot give is None."""
    directory = os.fspath(directory)
    if not layer_path(directory, 1).exists():
        raise CheckpointError(f"no layer checkpoints (layer1.safetensors, ...) in {directory}")
    if source is None:
        from ffstream.config import recorded

        run = recorded(directory)  # the run.json `ffstream run` wrote beside the checkpoints, if any
        source = _labelled_test_split(run.stream.source if run else None, directory)
    _, meta = checkpoint_config(layer_path(directory, 1))  # layer 1's metadata: the frame shape (any stack kind)
    channels, height, width = meta.get("frame_shape") or (1, 28, 28)
    center, pairs = trained_preprocessing(directory, meta)  # an SCFF stack: frames centred, each beside itself
    preprocess = Preprocess(size=(height, width), color=channels == 3, center=center, self_pair=pairs)
    images, frame_labels = dataset_arrays(source, preprocess, labels=labels)
    return {"source": source, **evaluate_arrays(directory, images, frame_labels)}


def embed(stack: Stack | str | os.PathLike, source: str, *, layer: int | Sequence[int] | None = None,
          max_frames: int | None = None, labels: str | None = None, threads: int | None = 1) -> Embedding:
    """Every frame of a source (up to `max_frames`) through `Stack.embed`, with each frame's index, time and label:
    what `ffstream embed` saves. stack: a loaded Stack or a checkpoint directory; layer: 1-based, several, or None
    for every layer side by side. threads: torch's threads while it runs (restored after). One, the default, leaves
    a core to the source, read ahead on its own thread; the forward passes are small (a 500-unit layer on a batch of
    1000 frames: milliseconds), and more threads only wait on each other, badly on a shared machine. None: as set."""
    stack = stack if isinstance(stack, Stack) else load(stack)
    stack._layers(layer)  # a layer out of range fails here, before the source is opened
    with _torch_threads(threads):
        return embedding.embed_source(stack, source, layer, max_frames, labels)


def save_embedding(features: Embedding, path: str | os.PathLike) -> None:
    """.npy: the features alone, float32 (N, F); .npz: features, frame, time_s and label (when there are labels)."""
    embedding.write(features, path)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block, and back after; None changes nothing."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _recorded_source(directory: str | os.PathLike) -> str:
    """The source the stack in `directory` learned from, as its run.json says; CheckpointError when it has none."""
    from ffstream.config import recorded

    run = recorded(os.fspath(directory))
    if run is None:
        raise CheckpointError(f"a source is needed: {os.fspath(directory)} has no run.json saying what the stack learned from")
    return run.stream.source


def _labelled_test_split(source: str | None, directory: str | os.PathLike) -> str:
    """The labelled source to score a run on when none is given: the test split of the dataset it learned from."""
    if source is None:
        raise CheckpointError(f"a source is needed: {os.fspath(directory)} has no run.json saying what the stack learned from")
    if source == "fashion-mnist" or source.startswith("fashion-mnist:"):
        return "fashion-mnist:test"
    if source.startswith("idx:"):
        folder, sep, split = source[len("idx:"):].rpartition(":")
        return f"idx:{folder if sep and split in ('train', 'test') else source[len('idx:'):]}:test"
    if source == "synthetic" or source.startswith("synthetic:"):
        return source  # generated: the same clip, the only labelled copy there is
    raise CheckpointError(f"a source is needed: the stack learned from {source!r}, which has no labelled test split")
