"""Recurrent (top-down) pipeline against the feedforward one: same layers, same data, same budget.

Images: Fashion-MNIST through both pipelines (the recurrent one repeats each
image `iterations` times), scored on the test split: progressive accuracy of
the sink's head during the stream, then energy and the softmax head on the
saved weights (the recurrent energy is the paper's: every label clamped at the
top, goodness summed over the window of iterations).

Video: a real video through both, unsupervised (hybrid negatives). Frames/s is
the sink's rate (first frame to last, so start-up is not counted). Per-frame
goodness comes from `--scores`: its mean, and how much it moves from one frame
to the next relative to its mean (a representation that holds on to a moving
object changes less between neighbouring frames).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ffstream.bench.learning import learning_config, run_pipeline
from ffstream.config import DEFAULT_LR, ModelConfig, RunConfig, StreamConfig, Topology
from ffstream.supervisor import resolve_stream, run_stack

DEFAULT_VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def image_comparison(layers: tuple[int, ...], epochs: int, batch: int, max_frames: int | None, iterations: int, window: tuple[int, int],
                     seed: int = 0, negatives: str | None = None, lr: float = DEFAULT_LR) -> dict:
    out = {}
    for name, recurrent in (("feedforward", False), ("recurrent", True)):
        cfg = learning_config("supervised", layers, epochs, batch, 10, negatives, lr, seed, max_frames=max_frames,
                              recurrent=recurrent, iterations=iterations, window=window)
        cfg.check()
        resolve_stream(cfg)
        out[name] = run_pipeline(cfg, "fashion-mnist:test")
    return out


def goodness_profile(scores_path: Path) -> dict:
    """Per-frame goodness (summed over layers) from a --scores file: its mean, and the mean frame-to-frame change / mean."""
    rows = [json.loads(line) for line in scores_path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (r["seq"], r["row"]))
    per_layer = np.array([r["goodness"] for r in rows], np.float64)  # (frames, layers)
    total = per_layer.sum(axis=1)
    change = np.abs(np.diff(total)).mean() / total.mean() if len(total) > 1 else None
    return {"frames": len(rows), "goodness_mean": round(float(total.mean()), 2), "goodness_per_layer": [round(float(v), 2) for v in per_layer.mean(axis=0)],
            "relative_change": round(float(change), 4) if change is not None else None}


def video_comparison(video: str, layers: tuple[int, ...], batch: int, max_frames: int | None, seed: int = 0, epochs: int = 1,
                     lr: float = DEFAULT_LR) -> dict:
    out = {"epochs": epochs}
    for name, recurrent in (("feedforward", False), ("recurrent", True)):
        with tempfile.TemporaryDirectory(prefix="ffrec-") as tmp:
            cfg = RunConfig(stream=StreamConfig(source=video, batch=batch, max_frames=max_frames, task="unsupervised", seed=seed, epochs=epochs),
                            model=ModelConfig(layers=layers, lr=lr, max_batch=batch, recurrent=recurrent), scores=f"{tmp}/scores.jsonl")
            resolve_stream(cfg)
            cfg.check()
            cfg.topology = Topology.local(len(layers), monitor_publish=f"ipc://{tmp}/monitor", run_dir=tmp)
            summary, supervisor, failure = run_stack(cfg, run_dir=tmp)
            if failure is not None:
                raise RuntimeError(f"{name} video run failed: {failure}")
            sink = summary["sink"]
            out[name] = {"frames": sink.get("frames"), "fps": sink.get("fps"), "wall_s": summary["wall_s"],
                         "layer_fps": [layer["fps"] for layer in summary["layers"]], **goodness_profile(Path(cfg.scores))}
    ff, rec = out["feedforward"]["fps"], out["recurrent"]["fps"]
    out["fps_ratio"] = round(rec / ff, 3) if ff and rec else None
    return out


def recurrent_benchmark(layers, epochs, batch, max_frames, iterations, window, video, video_batch, video_frames, images=True, seed=0,
                        video_epochs=1, lr=DEFAULT_LR) -> dict:
    """Both pipelines at the same learning rate `lr` (a recurrent image makes `iterations` layer steps, so it may want less)."""
    result: dict = {"layers": list(layers), "iterations": iterations, "window": list(window), "lr": lr}
    if images:
        result["images"] = {"epochs": epochs, "batch": batch, "max_frames": max_frames,
                            **image_comparison(tuple(layers), epochs, batch, max_frames, iterations, window, seed, lr=lr)}
    if video:
        result["video"] = {"source": video, "batch": video_batch, "max_frames": video_frames,
                           **video_comparison(video, tuple(layers), video_batch, video_frames, seed, video_epochs, lr)}
    return result


def format_result(r: dict) -> str:
    lines = [f"recurrent vs feedforward, layers {r['layers']}, {r['iterations']} iterations, window {r['window']}, lr {r['lr']:g}"]
    if "images" in r:
        im = r["images"]
        lines.append(f"Fashion-MNIST, {im['epochs']} epoch(s), max frames {im['max_frames']}, batch {im['batch']}:")
        for name in ("feedforward", "recurrent"):
            m = im[name]
            acc = ", ".join(f"{k.removeprefix('accuracy_')} {100 * v:.2f} %" for k, v in m.items() if k.startswith("accuracy") and v is not None)
            prog = m.get("progressive_accuracy")
            lines.append(f"  {name:11s}: test {acc}; progressive {100 * prog:.2f} %; {m['frames']} frames in {m['wall_s']:.1f} s" if prog is not None
                         else f"  {name:11s}: test {acc}")
    if "video" in r:
        v = r["video"]
        lines.append(f"video {v['source']} x{v['epochs']}, batch {v['batch']}, max frames {v['max_frames']}:")
        for name in ("feedforward", "recurrent"):
            m = v[name]
            lines.append(f"  {name:11s}: {m['frames']} frames, {m['fps']} frames/s (layers {m['layer_fps']}); goodness per frame mean "
                         f"{m['goodness_mean']} (per layer {m['goodness_per_layer']}), frame-to-frame change {m['relative_change']} of the mean")
        lines.append(f"  recurrent frames/s = {v['fps_ratio']} x feedforward")
    return "\n".join(lines)
