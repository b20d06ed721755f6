"""`ffstream run`: the whole stack on this machine, with a progress bar and a per-layer table at the end."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ffstream import config
from ffstream.config import Topology, recipes
from ffstream.config.loading import chosen_fields
from ffstream.sources import SYNTHETIC_SPEC
from ffstream.sources.synthetic import DEFAULT_FRAMES
from ffstream.supervisor import DATASET_PREFIXES, EXIT_USAGE, resolve_stream, run_stack

# The closing probe's clips: its train clip as long as the run, between 5,000 and 20,000 frames. Fitted on 5,000 frames
# the demo's probe read 93.2 %, on 15,000 95.55 %, on 20,000 96.75 %, on 30,000 96.8 % (one demo checkpoint, a test
# clip of 2,000); 20,000 costs the 30,000-frame demo about a minute more, and short runs keep their 5,000.
PROBE_TRAIN_FRAMES, PROBE_TEST_FRAMES = (5000, 20_000), 2000
VIDEO_RECIPE = "video"  # the recipe a recorded video runs with when no --recipe is given
LIVE_RECIPE = "webcam-live"  # and a live source: a frame forwarded at once, learning on a schedule (latency first)
LIVE_PREFIXES = ("webcam", "rtsp://", "rtsps://", "http://", "https://")

def config_from_args(args) -> config.RunConfig:
    """Defaults < --recipe < --config < FFSTREAM_* < --set < the flags given (ffstream.config.loading).

    With no --recipe, a recorded video (the synthetic demo, a video file) starts from the `video` recipe instead of
    the defaults, and a live source from `webcam-live`, unless the settings given choose another model (see
    `default_recipe`).
    """
    flags = {
        "stream": {"source": args.source, "max_frames": args.max_frames, "epochs": args.epochs, "seed": args.seed},
        "": {"checkpoint_dir": args.checkpoint_dir, "scores": args.scores, "device": args.device},
    }
    cfg = config.load(args.config, overrides=flags, recipe=args.recipe, sets=args.sets, check=False)
    recipe = default_recipe(cfg, chosen_fields(args.config, args.sets)) if args.recipe is None else None
    if recipe is not None:
        cfg = config.load(args.config, overrides=flags, base=recipes.read(recipe).data, sets=args.sets, check=False)
    cfg.check()  # before the source is opened: a bad field is one line, whatever the source
    resolve_stream(cfg)
    cfg.check()
    return cfg


# Fields that choose a model SCFF pairs do not fit: the user's choice of any of them keeps the plain defaults.
MODEL_CHOICES = frozenset({"model.layers", "model.recurrent", "model.competition", "sleep.negatives", "stream.pairs", "stream.task"})


def default_recipe(cfg: config.RunConfig, chosen: set[str]) -> str | None:
    """The recipe a run given none starts from: VIDEO_RECIPE for a recorded video, LIVE_RECIPE for a live source (a
    webcam, RTSP or HTTP camera: the plain defaults batch 64 frames, which at 15 frames/s waits 4 s to fill); None for
    an image dataset, a supervised task, or when the user set any field that chooses another model (MODEL_CHOICES).
    What is set wins either way."""
    if cfg.stream.task == "supervised" or chosen & MODEL_CHOICES or cfg.stream.source.startswith(DATASET_PREFIXES):
        return None
    return LIVE_RECIPE if cfg.stream.source.startswith(LIVE_PREFIXES) else VIDEO_RECIPE


def run_command(args) -> int:
    cfg = config_from_args(args)
    tensorboard = None
    if getattr(args, "tensorboard", None):
        from ffstream.monitor.tensorboard_log import TensorBoardLog

        tensorboard = TensorBoardLog(args.tensorboard)  # before any worker starts: no package, one line, exit 2
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    show_progress = not args.no_progress
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not show_progress,
    )
    task = progress.add_task(f"ffstream {cfg.stream.source}", total=None, rate="")
    last_plain = [0.0]

    dashboard_shown = [False]

    def on_metrics(name: str, m: dict) -> None:
        if tensorboard:
            tensorboard.add(name, m)
        if name == "monitor" and m.get("http") and not dashboard_shown[0]:
            dashboard_shown[0] = True
            logging.getLogger("ffstream.run").info("dashboard at %s (Prometheus: %smetrics)", m["http"], m["http"])
        if name != "source":
            return
        progress.update(task, completed=m.get("frames", 0), total=m.get("total"), rate=f"{m.get('fps', 0):.0f} frames/s")
        if show_progress and not console.is_terminal and time.monotonic() - last_plain[0] > 10:
            last_plain[0] = time.monotonic()  # no terminal: a plain progress line every 10 s instead of a bar
            print(f"progress: {m.get('frames', 0)}/{m.get('total') or '?'} frames, {m.get('fps', 0):.0f} frames/s", file=sys.stderr)

    # The run directory holds the ipc sockets, worker logs and final stats; it goes when the run succeeds.
    run_dir = tempfile.mkdtemp(prefix="ffstream-")
    probe_specs = closing_probe_specs(cfg)
    if probe_specs and cfg.checkpoint_dir is None:  # the closing probe reads the finished stack from its checkpoints
        cfg.checkpoint_dir = str(Path(run_dir) / "checkpoints")
    http = cfg.topology.monitor_http if args.http is None else (None if args.http.lower() in ("none", "off") else args.http)
    # the user's features address and layers (--set topology.features=ADDR): kept, the rest made local
    features, features_layers = cfg.topology.features, cfg.topology.features_layers
    cfg.topology = Topology.local(len(cfg.model.layers), args.monitor or cfg.topology.monitor_publish, run_dir=run_dir, monitor_http=http)
    cfg.topology.features, cfg.topology.features_layers = features, features_layers
    try:
        with progress:
            summary, supervisor, failure = run_stack(cfg, on_metrics, run_dir)
    finally:
        if tensorboard:
            tensorboard.close()
    if failure is not None and failure.exit_code == EXIT_USAGE:
        # bad input found by a worker (a camera that cannot be opened): one line, as for bad flags
        print(f"ffstream run: error: {failure}", file=sys.stderr)
        supervisor.cleanup()
        return EXIT_USAGE
    if failure is not None and failure.one_line:
        # a give-up (the end of the stream never acknowledged): its line names the log to read, kept for it
        print(f"ffstream run: error: {failure}", file=sys.stderr)
        return failure.exit_code
    if failure is None and probe_specs and not summary.get("interrupted"):
        summary["probe"] = closing_probe(cfg.checkpoint_dir, *probe_specs)
    print_summary(console, summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=1))
    if failure is not None:
        console.print(f"[red]ffstream run: {failure}[/red]\nworker logs: {supervisor.run_dir / 'logs'}")
        return 1
    supervisor.cleanup()
    return 0


def closing_probe_specs(cfg: config.RunConfig) -> tuple[str, str] | None:
    """The demo's probe streams: fresh clips of the next two seeds (train, test), for a feed-forward stack learning
    the synthetic clip; None for any other run."""
    match = SYNTHETIC_SPEC.fullmatch(cfg.stream.source)
    if match is None or cfg.model.recurrent:
        return None
    seed = int(match["seed"]) if match["seed"] else cfg.stream.seed
    frames = int(match["frames"]) if match["frames"] else DEFAULT_FRAMES
    train = min(max(frames, PROBE_TRAIN_FRAMES[0]), PROBE_TRAIN_FRAMES[1])
    return f"synthetic:{train}:seed={seed + 1}", f"synthetic:{PROBE_TEST_FRAMES}:seed={seed + 2}"


def closing_probe(checkpoint_dir: str, train: str, test: str) -> dict:
    """A linear probe on the finished stack's features (offline/probe.py), fitted on one held-out clip and scored on
    another: what the features tell a linear classifier, beside raw pixels. A failure is reported, not raised."""
    from ffstream.offline.probe import probe_checkpoint  # torch: only once a run has finished

    try:
        result = probe_checkpoint(checkpoint_dir, train, test)
    except (ValueError, OSError) as exc:  # CheckpointError, SourceError: the run itself went well
        return {"error": str(exc), "train": train, "test": test}
    return {"accuracy": result.all, "pixels": result.pixels, "layers": result.layers, "train": train, "test": test}


def print_summary(console: Console, summary: dict) -> None:
    table = Table(title=f"ffstream: {summary['source']} ({summary['task']}), {summary['wall_s']:.1f} s")
    for col in ("layer", "frames", "updates", "neg updates", "G pos", "G neg", "p pos", "p neg", "frames/s", "staleness"):
        table.add_column(col, justify="right")
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    for layer in summary["layers"]:
        table.add_row(
            str(layer["layer"]), fmt(layer["frames"], "d"), fmt(layer["updates"], "d"), fmt(layer["negative_updates"], "d"),
            fmt(layer["goodness_pos"], ".1f"), fmt(layer["goodness_neg"], ".1f"), fmt(layer["p_pos"]), fmt(layer["p_neg"]),
            fmt(layer["fps"], ".0f"), fmt(layer["staleness"], ".1f"),
        )
    console.print(table)
    sink = summary.get("sink") or {}
    if sink.get("accuracy") is not None:
        head = "online probe, standardised, with replay" if summary.get("task") == "unsupervised" else "softmax head"
        console.print(f"progressive accuracy ({head}, predict then learn): {100 * sink['accuracy']:.2f} % over {sink['evaluated']} frames")
    if summary.get("sleep"):
        s = summary["sleep"]
        console.print(f"sleep: {s.get('negatives')} negatives ({s.get('negative_kind')}), {s.get('refreshes')} snapshots, staleness {fmt(s.get('staleness'), '.1f')} batches")
    probe = summary.get("probe")
    if probe and probe.get("error"):
        console.print(f"probe (held-out clips): not run: {probe['error']}")
    elif probe:
        console.print(f"probe (held-out clips): {100 * probe['accuracy']:.1f} % (raw pixels {100 * probe['pixels']:.0f} %), "
                      f"fitted on {probe['train']}, scored on {probe['test']}")
