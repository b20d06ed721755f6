"""`ffstream bench novelty`: after learning one fixed-camera video, is other footage spliced into it novel?

Everything goes through the pipeline (real workers):

1. `ffstream run` learns the training video (`--epochs` passes, the recipe and `--set` given);
2. a spliced video is written (`ffstream.bench.splice`): the training video looped, with clips of foreign footage
   (default Megamind.avi, tree.avi and ffstream's synthetic shapes) inserted at known frames;
3. the stack runs frozen (`model.freeze`) on the spliced video: the sink writes each frame's goodness per layer
   (`--scores`) and raises novelty alerts (`novelty.events`), as a live run would;
4. it runs frozen on the training video itself (`--clean-loops` passes) for false alerts on the training footage.

Figures: per layer, the AUROC of goodness with the training footage as the positive class (1.0: every foreign
frame has lower goodness than every training frame; 0.5: no separation; below 0.5: foreign frames look more
familiar), per foreign source and all together; the same for the sink's novelty score (higher is novel); each
insert's alert latency (frames from its first frame to the alert, None when none fired before it ended); and false
alerts per 1,000 frames of training footage, in the spliced run (outside the inserts) and in the clean run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ffstream.bench.splice import SYNTHETIC, Insert, write_spliced
from ffstream.monitor.novelty import replay

DATA = "/usr/share/doc/opencv-doc/examples/data"
FOREIGN = (f"{DATA}/Megamind.avi", f"{DATA}/tree.avi", SYNTHETIC)
RUN_TIMEOUT_S = 1800  # one `ffstream run`; the default benchmark's longest (training) takes a few minutes on 2 cores
ALERT_TAIL = 10  # frames after an insert's end in which an alert still counts as that insert's (the meter's lag)


@dataclass
class NoveltyBenchConfig:
    video: str = f"{DATA}/vtest.avi"  # the training footage, a fixed camera
    foreign: tuple[str, ...] = FOREIGN  # video files, or "synthetic", spliced in turn
    recipe: str | None = "video-novelty"  # what `ffstream run` learns with; None: no --recipe (ffstream run picks)
    sets: list[str] = field(default_factory=list)  # --set overrides for the training run, e.g. model.layers=500,500,500
    epochs: int = 4  # training passes over the video (2 left layer 2 at 0.98 and a third layer inverted: BENCHMARKS.md)
    max_frames: int | None = None  # use only the first N frames of the video (quick runs, the test)
    inserts: int = 6  # foreign clips in the spliced video
    insert_frames: int = 50  # frames per clip
    lead: int = 200  # training frames before the first insert (the meter's warm-up comes out of these)
    loops: int = 2  # the training video's passes in the spliced video
    clean_loops: int = 2  # passes of the frozen run on the training video alone
    size: tuple[int, int] = (288, 384)  # (H, W) the spliced video is written at (the stack resizes as it learned)
    novelty: list[str] = field(default_factory=list)  # --set novelty.* for the frozen runs (default: the shipped ones)
    seed: int = 0


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney U over n_pos·n_neg)."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(positive) or not len(negative):
        return float("nan")
    negative = np.sort(negative)
    below = np.searchsorted(negative, positive, side="left")  # negatives strictly below each positive
    ties = np.searchsorted(negative, positive, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(positive) * len(negative)))


def _ffstream(argv: list[str], cwd: str, say: Callable[[str], None]) -> None:
    say("ffstream " + " ".join(argv))
    try:
        done = subprocess.run([sys.executable, "-m", "ffstream", *argv], capture_output=True, text=True, cwd=cwd,
                              timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ffstream {argv[0]} took over {RUN_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"ffstream {argv[0]} exited {done.returncode}: {last}")


def frozen_run(ck: str, source: str, tmp: str, name: str, novelty: list[str], say: Callable[[str], None],
               epochs: int = 1) -> tuple[np.ndarray, list[dict], dict]:
    """The trained stack frozen on `source` through the pipeline -> (goodness (N, L) in stream order, alert events,
    the run's summary). A copy of the checkpoint runs, so the trained one stays as it is."""
    frozen = f"{tmp}/{name}-ck"
    shutil.copytree(ck, frozen)
    scores, events, summary = f"{tmp}/{name}-scores.jsonl", f"{tmp}/{name}-alerts.jsonl", f"{tmp}/{name}-summary.json"
    sets = ["model.freeze=true", f"novelty.events={events}", *novelty]
    _ffstream(["run", "--recipe", frozen, "--source", source, "--checkpoint-dir", frozen, "--epochs", str(epochs),
               "--scores", scores, "--summary-json", summary, *(a for s in sets for a in ("--set", s)),
               "--no-progress", "--http", "none", "--monitor", f"ipc://{tmp}/{name}-monitor"], tmp, say)
    with open(scores) as fh:
        goodness = np.array([json.loads(line)["goodness"] for line in fh], np.float64)  # (N, L), the sink's order
    alerts = []
    if os.path.exists(events):  # written at the first alert only
        with open(events) as fh:
            alerts = [json.loads(line) for line in fh]
    with open(summary) as fh:
        figures = json.load(fh)
    # The sink resumes its frame count from the training run's sink.json: its alerts' frames count on from there.
    before = int(figures["sink"]["frames"]) - len(goodness)
    for alert in alerts:
        alert["frame"] = int(alert["frame"]) - before
    return goodness, alerts, figures


def insert_mask(n: int, inserts: list[Insert]) -> np.ndarray:
    """(n,) bool: True on the frames of an insert."""
    mask = np.zeros(n, bool)
    for ins in inserts:
        mask[ins.start : ins.end] = True
    return mask


def alert_figures(alerts: list[int], inserts: list[Insert], n: int, warmup: int) -> dict:
    """Latency per insert and false alerts: an alert belongs to an insert when it fires inside it or within
    ALERT_TAIL frames after it; any other is false. Rate per 1,000 scored training frames (warm-up not scored)."""
    latency, claimed = [], set()
    for ins in inserts:
        mine = [a for a in alerts if ins.start <= a < ins.end + ALERT_TAIL]
        claimed.update(mine)
        inside = [a for a in mine if a < ins.end]
        latency.append(min(inside) - ins.start if inside else None)
    false = [a for a in alerts if a not in claimed]
    clean = n - int(insert_mask(n, inserts).sum()) - warmup
    return {"latency": latency, "false_alerts": len(false), "false_frames": false, "clean_frames": clean,
            "false_per_1000": round(1000 * len(false) / clean, 3) if clean > 0 else None}


def separation(goodness: np.ndarray, novelty: np.ndarray, below: np.ndarray, inserts: list[Insert]) -> dict:
    """Per layer AUROC of goodness (training footage positive), and of novelty (foreign positive), per source and all;
    beside it the score the sink had before, the mean over layers of the one-sided (median − G) / IQR (below: (N, L))."""
    n = len(goodness)
    foreign = insert_mask(n, inserts)
    scored = ~np.isnan(novelty)
    out: dict[str, dict] = {}
    for name in ["all", *dict.fromkeys(ins.name for ins in inserts)]:
        mask = foreign if name == "all" else insert_mask(n, [i for i in inserts if i.name == name])
        out[name] = {
            "goodness_auroc": [round(auroc(goodness[~foreign, l], goodness[mask, l]), 4) for l in range(goodness.shape[1])],
            "novelty_auroc": round(auroc(novelty[mask & scored], novelty[~foreign & scored]), 4),
            "one_sided_mean_auroc": round(auroc(below[mask & scored].mean(1), below[~foreign & scored].mean(1)), 4),
            "goodness_mean": {"training": goodness[~foreign].mean(0).round(2).tolist(), "foreign": goodness[mask].mean(0).round(2).tolist()},
        }
    return out


def novelty_benchmark(cfg: NoveltyBenchConfig, say: Callable[[str], None] = lambda line: None) -> dict:
    """Train, splice, run frozen twice; the figures (see the module docstring) as one dict."""
    from ffstream.config import ConfigError, load

    try:  # the meter's settings as the frozen runs will have them, for the offline replay
        meter = load(None, sets=cfg.novelty).novelty
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-novelty-") as tmp:
        video = cfg.video
        if cfg.max_frames:  # a short copy of the video's start stands for it everywhere: training, splice, clean run
            video = f"{tmp}/train.mp4"
            write_spliced(video, cfg.video, (), size=cfg.size, loops=1, count=0, length=0, lead=0, max_frames=cfg.max_frames)
        ck = f"{tmp}/ck"
        train = ["run", "--source", video, "--checkpoint-dir", ck, "--epochs", str(cfg.epochs), "--seed", str(cfg.seed),
                 "--no-progress", "--http", "none", "--monitor", f"ipc://{tmp}/train-monitor"]
        train += ["--recipe", cfg.recipe] if cfg.recipe else []
        train += [a for s in cfg.sets for a in ("--set", s)]
        t0 = time.monotonic()
        _ffstream(train, tmp, say)
        train_s = time.monotonic() - t0
        spliced = f"{tmp}/spliced.mp4"
        say(f"writing {spliced}")
        inserts, frames = write_spliced(spliced, video, cfg.foreign, size=cfg.size, loops=cfg.loops, count=cfg.inserts,
                                        length=cfg.insert_frames, lead=cfg.lead)
        goodness, events, summary = frozen_run(ck, spliced, tmp, "spliced", cfg.novelty, say)
        clean_goodness, clean_events, _ = frozen_run(ck, video, tmp, "clean", cfg.novelty, say, epochs=cfg.clean_loops)
    if len(goodness) != frames:
        raise RuntimeError(f"the frozen run scored {len(goodness)} frames of {frames}: frames were lost on the way")
    below = np.empty_like(goodness)
    novelty, replayed = replay(goodness, meter.window, meter.warmup, meter.threshold, meter.alert_frames, below=below)
    live = sorted(int(e["frame"]) for e in events)
    alerts = alert_figures(live, inserts, frames, meter.warmup)
    result = {
        "video": cfg.video, "recipe": cfg.recipe, "sets": cfg.sets, "epochs": cfg.epochs, "layers": goodness.shape[1],
        "frames": frames, "inserts": [{"name": i.name, "start": i.start, "length": i.length} for i in inserts],
        "novelty_settings": {"window": meter.window, "warmup": meter.warmup, "threshold": meter.threshold,
                             "alert_frames": meter.alert_frames},
        "separation": separation(goodness, novelty, below, inserts),
        "alerts": {**alerts, "frames": live, "replay_agrees": live == [a.frame for a in replayed]},
        "train_s": round(train_s, 1), "wall_s": round(time.monotonic() - started, 1),
        "fps_frozen": summary.get("layers", [{}])[0].get("fps") if summary else None,
    }
    result["clean"] = {"frames": len(clean_goodness), "alerts": len(clean_events),
                       "alert_frames": [int(e["frame"]) for e in clean_events],
                       "false_per_1000": round(1000 * len(clean_events) / max(len(clean_goodness) - meter.warmup, 1), 3)}
    return result


def format_result(r: dict) -> str:
    """The figures as a few lines of text (`--json` prints the dict)."""
    lines = [(f"novelty on spliced footage: {r['video']} ({r['frames']} frames, {len(r['inserts'])} inserts), recipe "
              f"{r['recipe']} {' '.join(r['sets'])}, {r['epochs']} epochs, {r['layers']} layers; novelty {r['novelty_settings']}")]
    for name, s in r["separation"].items():
        lines.append(f"  {name:>14}: goodness AUROC per layer {', '.join(f'{a:.3f}' for a in s['goodness_auroc'])}; "
                     f"novelty AUROC {s['novelty_auroc']:.3f} (one-sided mean {s['one_sided_mean_auroc']:.3f}); mean goodness training {s['goodness_mean']['training']} "
                     f"foreign {s['goodness_mean']['foreign']}")
    a = r["alerts"]
    lines.append(f"  alert latency per insert (frames): {a['latency']} ({', '.join(i['name'] for i in r['inserts'])})")
    lines.append(f"  false alerts in the spliced run: {a['false_alerts']} in {a['clean_frames']} training frames "
                 f"({a['false_per_1000']} per 1,000); the sink's alerts match the offline replay: {a['replay_agrees']}")
    c = r["clean"]
    lines.append(f"  clean run on the training video: {c['alerts']} alerts in {c['frames']} frames ({c['false_per_1000']} per 1,000)")
    lines.append(f"  training {r['train_s']} s, whole benchmark {r['wall_s']} s")
    return "\n".join(lines)
