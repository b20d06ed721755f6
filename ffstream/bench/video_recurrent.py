"""Does the layer above help on video? The recurrent network (top-down context, ff/recurrent.py) on a labelled stream, in process.

One frame per step, each layer's state carried from frame to frame, so that the layer above's activity of the
previous frame is the top-down context of this one (as the recurrent pipeline runs a video). The stream is read
by `cursors` rows at once, each an evenly spaced stretch of it in order. Negatives are hybrids of the frame with
an older one, met in the same context. After one pass, a linear probe (video_study.probe) reads every layer's
normalised state with the top-down input on, and again with it silenced, on the same weights.

    PYTHONPATH=. python -m ffstream.bench.video_recurrent --frames 10000 --test-frames 4000   # prints a JSON dict
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ffstream.bench.video_study import as_input, cached_video, probe
from ffstream.ff.config import LayerConfig
from ffstream.ff.negatives import hybrid
from ffstream.ff.norm import rms_normalize
from ffstream.ff.pairs import Reservoir
from ffstream.ff.recurrent import RecurrentStack


def make_stack(width: int, layers: int, in_features: int, lr: float, seed: int) -> RecurrentStack:
    sizes = [in_features] + [width] * layers
    return RecurrentStack([LayerConfig(in_features=a, width=b, lr=lr, seed=seed + i) for i, (a, b) in enumerate(zip(sizes, sizes[1:]))])


def as_rows(video: torch.Tensor, cursors: int) -> torch.Tensor:
    """(T, D) -> (T // cursors, cursors, D): at step s, row k is frame k·span + s of the stream."""
    span = len(video) // cursors
    return video[: span * cursors].view(cursors, span, -1).transpose(0, 1)


def learn(stack: RecurrentStack, video: torch.Tensor, cursors: int, seed: int) -> dict:
    """One pass; per step, every layer one FF step on the frames (positive) and on hybrids (negative), both in the
    context of the states the stream left. Returns frames/s."""
    gen = torch.Generator().manual_seed(seed)
    reservoir = Reservoir(1024, seed=seed + 1)
    steps = as_rows(video, cursors)
    states = stack.initial_states(cursors)
    top = stack.label_input(None, cursors)
    started = time.perf_counter()
    for x in steps:
        if reservoir.ready():
            neg = _hybrid_flat(x, reservoir.sample(cursors), gen)
            below_pos, below_neg, new = x, neg, []
            for i, layer in enumerate(stack.layers):
                above = states[i + 1] if i + 1 < len(stack.layers) else top
                layer.add_negative_inputs(layer.pack(below_neg, above, states[i]))
                with torch.no_grad():
                    h_neg = layer(layer.pack(below_neg, above, states[i]))
                h_pos, _ = layer.learn(layer.pack(below_pos, above, states[i]))
                new.append(h_pos.detach())
                below_pos, below_neg = rms_normalize(h_pos), rms_normalize(h_neg)
            states = new
        else:
            _, states = stack.step(x, top, states)
        reservoir.add(x.view(cursors, 1, 1, -1))
    return {"fps": round(len(steps) * cursors / (time.perf_counter() - started), 1)}


SIDE = 48  # moving Fashion-MNIST's canvas


def _hybrid_flat(x: torch.Tensor, partners: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, D) frames of SIDE² pixels and (B, 1, 1, D) partners -> (B, D) hybrids through the blurred mask."""
    b = len(x)
    return hybrid(x.view(b, 1, SIDE, SIDE), partners.reshape(b, 1, SIDE, SIDE), gen).view(b, -1)


def features(stack: RecurrentStack, video: torch.Tensor, cursors: int, top_down: bool) -> torch.Tensor:
    """(T', F): every layer's normalised state at each frame, the stream read in order (T' = T rounded to cursors)."""
    steps = as_rows(video, cursors)
    states = stack.initial_states(cursors)
    top = stack.label_input(None, cursors)
    out = []
    for x in steps:
        _, states = stack.step(x, top, states, top_down=top_down)
        out.append(torch.cat([rms_normalize(s) for s in states], dim=1))
    return torch.stack(out).transpose(0, 1).reshape(-1, out[0].shape[1])  # back to stream order


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--test-frames", type=int, default=4_000)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cursors", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="")
    a = p.parse_args()
    torch.set_num_threads(1)
    (tr, trl), (te, tel) = cached_video(a.cache, "fashion", a.frames, a.test_frames)
    video, test = as_input(tr).flatten(1), as_input(te).flatten(1)
    span, tspan = len(video) // a.cursors * a.cursors, len(test) // a.cursors * a.cursors
    labels, test_labels = torch.from_numpy(trl[:span]).long(), torch.from_numpy(tel[:tspan]).long()
    stack = make_stack(a.width, a.layers, video.shape[1], a.lr, a.seed)
    out = {"frames": a.frames, "test_frames": a.test_frames, "layers": [a.width] * a.layers, "lr": a.lr, "negatives": "hybrid"}
    untrained = {on: probe(features(stack, video, a.cursors, on)[::2], labels[::2], features(stack, test, a.cursors, on), test_labels)
                 for on in (True, False)}
    out["learning"] = learn(stack, video, a.cursors, a.seed)
    for on in (True, False):
        out["top_down" if on else "no_top_down"] = probe(features(stack, video, a.cursors, on)[::2], labels[::2],
                                                         features(stack, test, a.cursors, on), test_labels)
        out[("top_down" if on else "no_top_down") + "_untrained"] = untrained[on]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
