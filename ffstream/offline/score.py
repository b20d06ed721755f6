"""Per-frame goodness of a trained stack on a video: a novelty signal (`ffstream score`).

A layer trained on a stream gives its frames high goodness (the "max" variant); frames unlike
anything it learned get less. `novelty` puts the layers on one scale: each layer's goodness
relative to its threshold θ, averaged over layers, sign flipped so that higher means more novel:

    novelty = mean_l (θ_l − G_l) / θ_l          ("min" variant: mean_l (G_l − θ_l) / θ_l)

0 is a frame at the threshold of every layer; a frame with twice the threshold's goodness scores −1.

`novelty_recent` is what a run's sink says of the same frames in the same order (`ffstream.monitor.novelty`, the
shipped `novelty.*` settings): each layer's distance from its recent median goodness in interquartile ranges, either
direction, the largest over layers; NaN for the warm-up frames. It is the score the sink's alerts use.

A recurrent stack (`ffstream run --recurrent`) takes the video's frames as its steps, one frame a step, in order,
as in a recurrent run on video: each layer hears the layer above's state of the previous frame and keeps 0.3 of
its own. It is scored twice: as it is, and with every top-down input silenced (each layer's damped state kept),
so that the difference between the two is what the feedback from above does to each frame's goodness.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch

from ffstream.ff import FFStack
from ffstream.ff.checkpoint import CheckpointError
from ffstream.ff.labels import neutral_label
from ffstream.ff.recurrent import RecurrentStack
from ffstream.offline.evaluate import load_checkpoints
from ffstream.sources import Preprocess, SourceError, open_source


@dataclass
class Scores:
    """Goodness of every frame of a source at every layer, and its novelty, with what identifies each frame."""

    frames: np.ndarray  # int64 (N,): frame index in the video, 0-based
    times: np.ndarray  # float64 (N,): seconds from the start (index / frame rate; the index when the rate is unknown; live: by the clock)
    goodness: np.ndarray  # float64 (N, L): goodness of every frame at every layer
    thresholds: list[float]  # θ of each layer, the goodness a layer was trained to push positives above
    novelty: np.ndarray  # float64 (N,): see the module docstring
    novelty_recent: np.ndarray  # float64 (N,): the sink's live score on these frames in order (NaN in its warm-up)
    frame_rate: float | None  # the video's frames/s; None when its header does not say
    source: str  # the source spec (a video's path)
    checkpoint_dir: str
    labels: np.ndarray | None = None  # int64 (N,): each frame's class from the video's label sidecar; None: unlabelled
    without_top_down: "Scores | None" = None  # a recurrent stack's frames scored with its top-down silenced (api.score)


def load_scoring_stack(directory: str | os.PathLike) -> tuple[FFStack | RecurrentStack, dict, Preprocess]:
    """The stack in `directory` (either kind), its metadata and the preprocessing it was trained with; CheckpointError if unusable."""
    try:
        stack, meta = load_checkpoints(directory)
    except ValueError as exc:  # layers that do not chain, configs that do not parse
        raise CheckpointError(f"{directory}: {exc}") from None
    shape = meta.get("frame_shape") or [1, 28, 28]
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise CheckpointError(f"{directory}: layer 1 was saved with frame shape {shape}, expected [channels, height, width]")
    channels, height, width = (int(v) for v in shape)
    center, pairs = trained_preprocessing(directory, meta)
    if (2 if pairs else 1) * channels * height * width != stack.layers[0].cfg.in_features:
        raise CheckpointError(
            f"{directory}: layer 1 takes {stack.layers[0].cfg.in_features} values, but its frames are {channels}x{height}x{width}"
            + (", paired" if pairs else "")
        )
    # A paired stack (SCFF) learned from a frame beside its predecessor; at inference a frame is beside itself.
    return stack, meta, Preprocess(size=(height, width), color=channels == 3, center=center, self_pair=pairs)


def trained_preprocessing(directory: str | os.PathLike, meta: dict) -> tuple[bool, bool]:
    """(center, pairs) the stack was trained with: from its checkpoint's metadata, else its run.json, else neither."""
    if "pairs" in meta:
        return bool(meta.get("center")), bool(meta["pairs"])
    from ffstream.config.loading import recorded  # config: only for checkpoints from before the metadata said

    try:
        run = recorded(str(directory))
    except ValueError:  # a run.json of another version: the metadata's silence means neither
        run = None
    return (run.stream.center, run.stream.pairs) if run is not None else (False, False)


def frame_goodness(stack: FFStack, pixels: np.ndarray, num_classes: int | None) -> np.ndarray:
    """pixels: float32 (B, C, H, W) -> goodness (B, L). Supervised stacks see the neutral label, as when predicting."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, np.float32)).flatten(1)  # (B, D)
    if num_classes:
        x = neutral_label(x, num_classes, stack.label_scale, stack.label_relative)
    with torch.no_grad():
        hs = stack.activities(x)
        return torch.stack([layer.goodness(h) for layer, h in zip(stack.layers, hs)], dim=1).double().numpy()


def recurrent_goodness(stack: RecurrentStack, frames: np.ndarray, top_down: bool = True) -> np.ndarray:
    """frames: float32 (N, C, H, W) in time order -> goodness (N, L), one step per frame."""
    x = torch.from_numpy(np.ascontiguousarray(frames, np.float32)).flatten(1)  # (N, D)
    states = stack.initial_states(1)
    top = stack.label_input(None, 1)  # the neutral label (supervised) or nothing
    out = np.empty((len(x), len(stack.layers)))
    for t in range(len(x)):
        _, states = stack.step(x[t : t + 1], top, states, top_down=top_down)
        out[t] = [float(layer.goodness(h)) for layer, h in zip(stack.layers, states)]
    return out


def novelty(goodness: np.ndarray, thresholds: list[float], variant: str = "max") -> np.ndarray:
    """goodness (N, L) -> (N,); see the module docstring."""
    theta = np.asarray(thresholds, np.float64)  # (L,)
    relative = (theta - goodness) / theta if variant == "max" else (goodness - theta) / theta
    return relative.mean(axis=1)


def recent_novelty(goodness: np.ndarray) -> np.ndarray:
    """goodness (N, L) in stream order -> (N,): the sink's live novelty with the shipped novelty.* settings."""
    from ffstream.config.sections import NoveltyConfig  # config: the settings' one home
    from ffstream.monitor.novelty import replay

    n = NoveltyConfig()
    return replay(goodness, n.window, n.warmup, n.threshold, n.alert_frames)[0]


def score_video(video: str | os.PathLike, directory: str | os.PathLike, batch: int = 256,
                labels: str | None = None, max_frames: int | None = None,
                interruptible: bool = False) -> tuple[Scores, Scores | None]:
    """A source's scores by the stack in `directory`, and for a recurrent stack the same frames scored with its
    top-down silenced (None for a feedforward stack).

    video: any source spec (a video file, webcam:N, rtsp:// or http:// MJPEG, synthetic:N, a dataset), read in stream
    order; batch: frames per forward pass (feedforward only); labels: a video's label CSV (default: the same-stem .csv
    beside it, if any), written as a `label` column; max_frames: stop after this many (a live source without it runs
    until interrupted); interruptible: Ctrl-C (KeyboardInterrupt) ends the reading and the frames read so far are
    scored, as `ffstream score` does on a live source. A live source's times are seconds since its first frame."""
    stack, meta, preprocess = load_scoring_stack(directory)
    spec = os.fspath(video)
    if max_frames is not None and max_frames <= 0:
        raise SourceError(f"max_frames must be positive, got {max_frames}")
    recurrent = isinstance(stack, RecurrentStack)
    num_classes = meta.get("num_classes") if meta.get("task") != "unsupervised" else None
    indices: list[int] = []
    stamps: list[float] = []  # each frame's capture time (live sources' clock)
    frame_labels: list[int | None] = []
    rows: list[np.ndarray] = []  # feedforward: goodness (B, L) per batch
    pending: list[np.ndarray] = []  # frames (C, H, W) not scored yet; a recurrent stack scores the whole clip at the end

    def flush() -> None:
        if pending and not recurrent:
            rows.append(frame_goodness(stack, np.stack(pending), num_classes))
            pending.clear()

    with open_source(spec, preprocess, labels=labels, shuffle=False) as source:
        try:
            for frame in source:
                indices.append(frame.index)
                stamps.append(frame.t_src)
                frame_labels.append(frame.label)
                pending.append(frame.pixels)
                if len(pending) >= batch:
                    flush()
                if len(indices) == max_frames:
                    break
        except KeyboardInterrupt:
            if not interruptible:
                raise
        flush()
        live, rate = source.live, getattr(source, "frame_rate", None)
    if not indices:
        raise CheckpointError(f"no frames read from {spec}")
    goodness = recurrent_goodness(stack, np.stack(pending)) if recurrent else np.concatenate(rows)  # (N, L)
    frames = np.asarray(indices, np.int64)
    if live:
        times = np.asarray(stamps, np.float64) - stamps[0]
    else:
        times = frames / rate if rate else frames.astype(np.float64)
    thresholds = [float(layer.cfg.theta) for layer in stack.layers]
    variant = stack.layers[0].cfg.variant
    labelled = all(label is not None for label in frame_labels)
    scores = Scores(
        frames=frames,
        times=times,
        goodness=goodness,
        thresholds=thresholds,
        novelty=novelty(goodness, thresholds, variant),
        novelty_recent=recent_novelty(goodness),
        frame_rate=rate,
        source=spec,
        checkpoint_dir=os.fspath(directory),
        labels=np.asarray(frame_labels, np.int64) if labelled else None,
    )
    if not recurrent:
        return scores, None
    without = recurrent_goodness(stack, np.stack(pending), top_down=False)  # frames are steps: the same clip, in order
    return scores, dataclasses.replace(scores, goodness=without, novelty=novelty(without, thresholds, variant),
                                       novelty_recent=recent_novelty(without))


def comparison_line(with_top_down: Scores, without: Scores) -> str:
    """One line: mean goodness / θ, mean novelty and frame-to-frame change of goodness, with and without top-down."""
    def figures(s: Scores) -> str:
        total = s.goodness.sum(axis=1)
        change = float(np.abs(np.diff(total)).mean() / total.mean()) if len(total) > 1 else float("nan")
        ratio = float((s.goodness / np.asarray(s.thresholds)).mean())
        return f"goodness/θ {ratio:.3f}, novelty {float(s.novelty.mean()):+.4f}, frame-to-frame change {change:.4f}"
    return f"recurrent vs feedforward: with top-down {figures(with_top_down)}; without top-down {figures(without)}"


def write_csv(scores: Scores, path: str | os.PathLike) -> None:
    """Columns: frame, time_s, goodness_layer1..L, novelty, novelty_recent (empty in warm-up), and label when the video
    is labelled; one row per frame."""
    layers = scores.goodness.shape[1]
    labelled = scores.labels is not None
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["frame", "time_s", *(f"goodness_layer{i}" for i in range(1, layers + 1)), "novelty", "novelty_recent", *(["label"] if labelled else [])])
        for i in range(len(scores.frames)):
            label = [int(scores.labels[i])] if labelled else []
            out.writerow([int(scores.frames[i]), f"{scores.times[i]:.4f}", *(f"{g:.4f}" for g in scores.goodness[i]), f"{scores.novelty[i]:.5f}",
                          "" if np.isnan(scores.novelty_recent[i]) else f"{scores.novelty_recent[i]:.4f}", *label])


def read_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A scores CSV back as columns (tests, notebooks)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {key: np.array([float(r[key] or "nan") for r in rows]) for key in (rows[0].keys() if rows else [])}


def require_matplotlib() -> None:
    """Raises ImportError with a one-line hint when matplotlib is missing (checked before any scoring work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"--plot needs matplotlib (pip install matplotlib, or pip install 'ffstream[plot]'): {exc}") from None


def plot(scores: Scores, path: str | os.PathLike) -> None:
    """Two panels over video time: each layer's goodness relative to its threshold, and the novelty score."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for i, theta in enumerate(scores.thresholds):
        top.plot(scores.times, scores.goodness[:, i] / theta, linewidth=1.2, label=f"layer {i + 1} (θ = {theta:g})")
    top.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="threshold θ")
    top.set_ylabel("goodness / threshold θ")
    top.legend(loc="best", fontsize=9)
    top.grid(alpha=0.3)
    bottom.plot(scores.times, scores.novelty, color="tab:red", linewidth=1.2)
    bottom.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    bottom.set_ylabel("novelty\n(higher: less like training)")
    bottom.set_xlabel("time in the video (s)" if scores.frame_rate else "frame")
    bottom.grid(alpha=0.3)
    fig.suptitle(
        f"ffstream score: {os.path.basename(scores.source)}, {len(scores.frames)} frames, "
        f"{len(scores.thresholds)} layers from {os.path.basename(os.path.normpath(scores.checkpoint_dir))}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
