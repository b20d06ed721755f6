"""`ffstream bench video`: unsupervised FF on two labelled video streams, beside the baselines an FF figure needs.

For each stream (the built-in shapes: learn on the seed-0 clip, probe scored on a seed-1 clip; moving
Fashion-MNIST: the train split's stream, probe scored on a test-split stream) the rows are FF learning in order,
FF on the same frames shuffled, the same layers untrained, a linear probe on raw pixels, and backprop on the same
layers in order (supervised). Each row has its accuracy and frames/s per seed and their mean. The work is
video_study's; this module only runs it per stream and seed and collects the figures.

The shuffled row is the i.i.d. pass as one would train it on a fixed set: the recipe's rate falling linearly to 1 %
over the pass (SHUFFLED_LR_DECAY). At the recipe's constant rate a shuffled pass drifts: moving Fashion-MNIST read
72.0 % against 77.9 % decaying (30k frames; 3e-4: 78.0 / 77.1 %, 1e-3: 77.1 / 78.3 %, init seeds 0 / 1), shapes 92.7
against 95.6 % (BENCHMARKS.md, "In order against shuffled, each at its rate"). A stream in order has no end for a
rate to decay to: the in-order rows keep the recipe's schedule, the rate halving every 50k frames to 0.1.

Moving Fashion-MNIST gets a second probe too, fitted on one frame each of PROBE_GARMENTS garments of the train split
(the usual linear evaluation, on many labelled images) and scored on the same test stream: 30k frames hold only
1,012 garments, and with so few a linear probe tops out near 78 % even on still, aligned pixels (BENCHMARKS.md, "The
ceiling of these layers and this probe").

    >>> result = video_benchmark(VideoBenchConfig(frames=400, test_frames=200, seeds=(0,), streams=("shapes",)))  # doctest: +SKIP
    >>> sorted(result["streams"]["shapes"]["rows"])     # ['backprop', 'ff_in_order', 'ff_shuffled', 'raw_pixels', 'untrained']
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

STREAMS = ("shapes", "fashion")
ROWS = ("ff_in_order", "ff_shuffled", "untrained", "raw_pixels", "backprop")
SHUFFLED_LR_DECAY = True  # the shuffled row's rate falls linearly over its pass (see above)
# What each row's frames/s times: a row that learns times its one pass; a row that does not, its readout.
FPS_MEANS = {
    "ff_in_order": "FF learning, one pass over the training stream in order (frames learned / s)",
    "ff_shuffled": "FF learning, the same frames in a random order (the rate decaying over the pass)",
    "untrained": "readout: features of the probe's train and test frames, the probe's fit and scoring",
    "raw_pixels": "readout: the probe's fit and scoring on the pixels of its train and test frames",
    "backprop": "backprop training, one pass over the training stream in order",
}
STREAM_NOTES = {
    "shapes": "built-in synthetic shapes, 28x28 grey, 4 classes: learn on seed 0, probe fitted on it, scored on seed 1",
    "fashion": "moving Fashion-MNIST, 48x48 grey, 10 classes: learn on the train split's stream (seed 0), probe scored on "
               "a test-split stream (seed 1)",
}
PROBE_SET_ROWS = ("ff_in_order", "untrained", "raw_pixels")
PROBE_SET_SEED = 11  # the probe set's garment order and positions: not the training stream's (seed 0) nor the test's (1)
PIPELINE_TIMEOUT_S = 1800  # per command of the pipeline row; a hung run costs a null row, not the whole bench


@dataclass(frozen=True)
class VideoBenchConfig:
    frames: int = 30_000  # training frames per stream
    test_frames: int = 10_000  # frames of the stream the probe (and backprop) is scored on
    seeds: tuple[int, ...] = (0, 1)  # init/negative seeds of FF in order and shuffled; the other rows use the first only
    streams: tuple[str, ...] = STREAMS  # which streams, a subset of STREAMS
    probe_every: int = 2  # the probe is fitted on every probe_every-th training frame
    threads: int = 1  # torch threads (the study's figures are one thread)
    pipeline: bool = True  # also the pipeline row: `ffstream run --recipe video` + `ffstream probe` on the shapes clips
    probe_garments: int = 15_000  # fashion: a second probe fitted on one frame each of this many train-split garments; 0: none


def pipeline_row(frames: int, test_frames: int, say: Callable[[str], None]) -> tuple[dict | None, str]:
    """(row, note): `ffstream run --recipe video` on the seed-0 shapes clip, then `ffstream probe` on its checkpoint,
    fitted on that clip and scored on a seed-1 clip. The row is None, and the note says why, where the shipped recipe is
    not SCFF or a command fails; frames/s is the whole run's, start-up included."""
    import json
    import subprocess
    import tempfile

    from ffstream.config.recipes import read

    negatives = read("video").data.get("sleep", {}).get("negatives", "hybrid")
    if negatives != "scff":
        return None, f"not measured: the shipped `video` recipe's negatives are {negatives!r}, not SCFF"
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        ck = f"{tmp}/ck"
        run = ["run", "--recipe", "video", "--source", f"synthetic:{frames}:seed=0", "--checkpoint-dir", ck, "--seed", "0",
               "--no-progress", "--http", "none", "--monitor", f"ipc://{tmp}/monitor.pub"]  # a private monitor socket
        probe = ["probe", "--checkpoint-dir", ck, "--train", f"synthetic:{frames}:seed=0", "--test",
                 f"synthetic:{test_frames}:seed=1", "--no-pixels", "--json"]
        started = time.perf_counter()
        for argv in (run, probe):
            say(f"pipeline: ffstream {argv[0]}")
            try:
                done = subprocess.run([sys.executable, "-m", "ffstream", *argv], capture_output=True, text=True, cwd=tmp,
                                      timeout=PIPELINE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return None, f"not measured: ffstream {argv[0]} took over {PIPELINE_TIMEOUT_S} s"
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                return None, f"not measured: ffstream {argv[0]} exited {done.returncode}: {last}"
            if argv is run:
                wall = time.perf_counter() - started
    out = json.loads(done.stdout)
    row = {"accuracy": out["all"], "fps": round(frames / wall, 1), "layers": out["layers"], "n_train": out["n_train"],
           "n_test": out["n_test"]}
    return row, ("ffstream run --recipe video on synthetic:N:seed=0, then ffstream probe (logistic, as the rows above; every layer) fitted on "
                 "that clip, scored on synthetic:M:seed=1; frames/s: the whole run with start-up")


def _stats(per_seed: dict[int, dict]) -> dict:
    """{seed: {accuracy, fps}} -> the row: per seed and the mean of each."""
    n = len(per_seed)
    return {"per_seed": {str(s): v for s, v in per_seed.items()},
            "accuracy": sum(v["accuracy"] for v in per_seed.values()) / n,
            "fps": round(sum(v["fps"] for v in per_seed.values()) / n, 1)}


def _accuracies(per_seed: dict[int, float]) -> dict:
    """{seed: accuracy} -> per seed and their mean."""
    return {"per_seed": {str(s): v for s, v in per_seed.items()}, "accuracy": sum(per_seed.values()) / len(per_seed)}


def run_stream(name: str, train, test, cfg: VideoBenchConfig, say: Callable[[str], None], probe_set=None) -> dict:
    """Every row on one stream: video_study with baselines at the first seed, then FF in order at the others, then
    shuffled at every seed. probe_set (frames, labels): the in-order, untrained and raw-pixel rows probed on it too."""
    from ffstream.bench.video_study import study_from_recipe, video_study

    rows: dict[str, dict[int, dict]] = {row: {} for row in ROWS}
    on_set: dict[str, dict[int, float]] = {row: {} for row in PROBE_SET_ROWS}
    first = cfg.seeds[0]
    for seed in cfg.seeds:
        study = study_from_recipe("video", seed=seed)  # what `ffstream run --recipe video` learns with
        r = video_study(study, train, test, cfg.probe_every, baselines=seed == first,
                        progress=lambda row, seed=seed: say(f"{name}: {row}, seed {seed}"), probe_set=probe_set)
        rows["ff_in_order"][seed] = {"accuracy": r["ff"], "fps": r["learning"]["fps"]}
        if probe_set is not None:
            on_set["ff_in_order"][seed] = r["probe_set"]["ff"]
            if seed == first:
                on_set["untrained"][seed], on_set["raw_pixels"][seed] = r["probe_set"]["untrained"], r["probe_set"]["raw_pixels"]
        if seed == first:
            rows["untrained"][seed] = {"accuracy": r["untrained"], "fps": r["untrained_fps"]}
            rows["raw_pixels"][seed] = {"accuracy": r["raw_pixels"], "fps": r["raw_pixels_fps"]}
            rows["backprop"][seed] = {"accuracy": r["backprop"]["accuracy"], "fps": r["backprop"]["fps"]}
            study_config = r["config"]
    for seed in cfg.seeds:
        study = study_from_recipe("video", seed=seed, shuffled=True, lr_decay=SHUFFLED_LR_DECAY)
        r = video_study(study, train, test, cfg.probe_every, baselines=False,
                        progress=lambda row, seed=seed: say(f"{name}: {row}, seed {seed}"))
        rows["ff_shuffled"][seed] = {"accuracy": r["ff"], "fps": r["learning"]["fps"]}
    out = {"data": STREAM_NOTES[name], "train_frames": len(train[1]), "test_frames": len(test[1]),
           "study_config": study_config, "shuffled_config": r["config"], "rows": {row: _stats(v) for row, v in rows.items()}}
    if probe_set is not None:
        out["probe_set"] = {"data": f"one frame each of {len(probe_set[1]):,} train-split garments (seed {PROBE_SET_SEED}), "
                                    "scored on the same test stream", "frames": len(probe_set[1]),
                            "rows": {row: _accuracies(v) for row, v in on_set.items()}}
    return out


def video_benchmark(cfg: VideoBenchConfig, say: Callable[[str], None] | None = None) -> dict:
    """The figures' dict: config, per stream its rows, the pipeline row (None until SCFF runs in the workers), wall_s."""
    import torch

    from ffstream.bench.video_study import load_video
    from ffstream.sources.moving_fashion import moving_fashion

    started = time.perf_counter()
    say = say or (lambda line: None)

    def stamped(line: str) -> None:
        say(f"{line} ({time.perf_counter() - started:.0f} s)")

    torch.set_num_threads(cfg.threads)
    streams = {}
    for name in cfg.streams:
        stamped(f"{name}: generating {cfg.frames:,} training and {cfg.test_frames:,} test frames")
        train, test = load_video(name, cfg.frames, cfg.test_frames)
        probe_set = None
        if name == "fashion" and cfg.probe_garments:
            probe_set = moving_fashion(cfg.probe_garments, "train", PROBE_SET_SEED, segment=(1, 1))  # one frame a garment
        streams[name] = run_stream(name, train, test, cfg, stamped, probe_set)
        stamped(f"{name}: done")
    pipeline, note = pipeline_row(cfg.frames, cfg.test_frames, stamped) if cfg.pipeline else (None, "not run: --no-pipeline")
    return {"config": {**asdict(cfg), "seeds": list(cfg.seeds), "streams": list(cfg.streams)}, "fps_means": FPS_MEANS,
            "streams": streams, "pipeline": pipeline, "pipeline_note": note,
            "wall_s": round(time.perf_counter() - started, 1)}


def format_result(result: dict) -> str:
    """A markdown table per stream: row, accuracy per seed, mean, frames/s."""
    lines = []
    for name, stream in result["streams"].items():
        lines += [f"## {name}: {stream['data']} ({stream['train_frames']:,} training, {stream['test_frames']:,} test frames)",
                  "", "| row | accuracy per seed | mean accuracy | frames/s |", "| --- | --- | --- | --- |"]
        for row, r in stream["rows"].items():
            per = ", ".join(f"{v['accuracy']:.2%} (seed {s})" for s, v in r["per_seed"].items())
            lines.append(f"| {row} | {per} | {r['accuracy']:.2%} | {r['fps']:,.1f} |")
        lines.append("")
        if "probe_set" in stream:
            lines += [f"probe fitted on {stream['probe_set']['data']}:", "", "| row | accuracy per seed | mean accuracy |",
                      "| --- | --- | --- |"]
            for row, r in stream["probe_set"]["rows"].items():
                per = ", ".join(f"{v:.2%} (seed {s})" for s, v in r["per_seed"].items())
                lines.append(f"| {row} | {per} | {r['accuracy']:.2%} |")
            lines.append("")
    p = result["pipeline"]
    figure = "null" if p is None else f"{p['accuracy']:.2%} at {p['fps']:,.1f} frames/s"
    lines.append(f"pipeline: {figure} ({result['pipeline_note']})")
    lines.append(f"whole bench: {result['wall_s']:.0f} s")
    return "\n".join(lines)


def progress_line(line: str) -> None:
    print(f"bench video: {line}", file=sys.stderr, flush=True)
