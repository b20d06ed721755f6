"""The `ffstream` command: run, worker, monitor, score, eval, ..."""

from __future__ import annotations

import argparse
import logging
import sys

from ffstream import __version__
from ffstream.commands import UserError
from ffstream.commands.check import add_arguments as check_arguments
from ffstream.commands.embed import add_arguments as embed_arguments
from ffstream.commands.probe import LABELS_HELP
from ffstream.commands.probe import add_arguments as probe_arguments
from ffstream.config import (  # config imports no torch: --help stays fast
    DEFAULT_MONITOR,
    DEFAULT_MONITOR_HTTP,
    ConfigError,
)

EXIT_USAGE = 2  # bad flags, config, input files or checkpoints: a one-line message, no traceback


def _layers(text: str) -> tuple[int | str, ...]:
    """--layers: dense widths (2000,2000) or specs (conv:32x3x3,conv:64x3x3/2,dense:1000), kept as the config holds them."""
    from ffstream.ff.spec import parse_layers

    try:
        specs = parse_layers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"in {text!r}: {exc}") from None
    return tuple(s.size if s.kind == "dense" else str(s) for s in specs)


def _at_least(text: str, least: int, what: str) -> int:
    """An integer flag's value, or argparse's one-line error naming `what` was expected."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _positive(text: str) -> int:
    return _at_least(text, 1, "a positive integer")


def _non_negative(text: str) -> int:
    return _at_least(text, 0, "a whole number >= 0")


def _seeds(text: str) -> tuple[int, ...]:
    """--seeds: 0,1 -> (0, 1); distinct non-negative integers."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds, got {text!r}")
    return seeds


def _streams(text: str) -> tuple[str, ...]:
    """--streams: shapes,fashion; each known, none twice."""
    streams = tuple(text.split(","))
    unknown = [s for s in streams if s not in ("shapes", "fashion")]
    if unknown or len(set(streams)) != len(streams):
        raise argparse.ArgumentTypeError(f"expected distinct streams among shapes, fashion, got {text!r}")
    return streams


class OneLineParser(argparse.ArgumentParser):
    """Bad flags get one line naming the flag, and exit 2; `--help` still shows the usage."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ffstream", description="Learn from live video with the Forward-Forward algorithm, one process per layer.")
    parser.add_argument("--version", action="version", version=f"ffstream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the whole stack locally, one OS process per worker",
                         description="Every setting is a config field: a recipe sets them, --set changes any one "
                                     "(precedence: defaults < --recipe < --config < FFSTREAM_* < --set < these flags). "
                                     "`ffstream recipes` lists the recipes.")
    what = run.add_argument_group("what to learn from, and how")
    what.add_argument("--source", help="synthetic[:N][:seed=S] (default synthetic), a video FILE (labelled by its same-stem .csv if there is one; "
                      "another: --set stream.labels=FILE), webcam:N, rtsp://..., idx:DIR[:train|test], fashion-mnist[:train|test]")
    what.add_argument("--recipe", help="a shipped recipe (ffstream recipes), a recipe JSON file, or a checkpoint directory (its run.json)")
    what.add_argument("--config", help="JSON config file (sections stream, model, sleep, topology); above the recipe")
    what.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="any config field, repeatable, e.g. --set model.layers=conv:20x3x3,conv:80x3x3 --set sleep.enabled=false "
                           "--set model.lr=0.01 --set stream.batch=16 (every field and its default: ffstream recipes show)")
    long = run.add_argument_group("how long")
    long.add_argument("--max-frames", type=_positive, help="stop after N frames")
    long.add_argument("--epochs", type=_positive, help="passes over a file or dataset (default 1)")
    out = run.add_argument_group("where results go")
    out.add_argument("--checkpoint-dir", help="layer checkpoints, the softmax head and run.json (the effective config) go here; resumed if present")
    out.add_argument("--scores", help="write per-frame goodness per layer to this JSONL file")
    out.add_argument("--summary-json", help="write the end-of-run figures to this file")
    watch = run.add_argument_group("watching")
    watch.add_argument("--monitor", help=f"address where the monitor publishes metrics (default {DEFAULT_MONITOR})")
    watch.add_argument("--http", help=f"web dashboard and Prometheus /metrics (default {DEFAULT_MONITOR_HTTP}; port 0: any free port; none: off)")
    watch.add_argument("--no-progress", action="store_true", help="no progress bar")
    watch.add_argument("--tensorboard", metavar="DIR", help="also log every worker's metrics as TensorBoard scalars in DIR (needs the tensorboard package)")
    machine = run.add_argument_group("machine")
    machine.add_argument("--seed", type=int, help="seed for weights, shuffling and negatives (default 0)")
    machine.add_argument("--device", help="torch device for the layers: cpu (default), cuda, cuda:N")

    recipes = sub.add_parser("recipes", help="list the shipped recipes with their measured figures; `recipes show NAME` prints one")
    recipes.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    recipes.add_argument("name", nargs="?", help="the recipe to show (a name or a path); none: every field with its default")

    worker = sub.add_parser("worker", help="run one worker (for docker-compose and Kubernetes)")
    worker.add_argument("kind", choices=("source", "layer", "sleep", "sink", "monitor", "standby"),
                        help="standby: a warm spare that `ffstream run` hands a crashed worker's place to")
    worker.add_argument("--config", help="JSON config file; FFSTREAM_* environment variables override it")
    worker.add_argument("--index", type=_positive, help="which layer, 1-based (layer workers)")
    worker.add_argument("--stats-dir", help="write this worker's final metrics here as <name>.json")

    check = sub.add_parser("check", help="health check: exit 0 only when a worker is alive and connected (docker-compose, Kubernetes)")
    check_arguments(check)

    keys = sub.add_parser("keys", help="CURVE keys for encrypted, authenticated links between hosts")
    keys_sub = keys.add_subparsers(dest="keys", required=True, metavar="ACTION")
    generate = keys_sub.add_parser("generate", help="write the server pair and client pairs into DIR (existing pairs are kept)")
    generate.add_argument("dir", metavar="DIR")
    generate.add_argument("--client", action="append", help="a client pair to make; repeatable (default: worker, viewer)")

    monitor = sub.add_parser("monitor", help="watch per-layer metrics live")
    monitor.add_argument("--connect", default=DEFAULT_MONITOR, help=f"the monitor's address (default {DEFAULT_MONITOR})")
    monitor.add_argument("--json", action="store_true", help="print one JSON object per metrics message")
    monitor.add_argument("--count", type=_positive, help="exit after N messages")
    monitor.add_argument("--seconds", type=float, help="exit after this many seconds")
    monitor.add_argument("--tensorboard", metavar="DIR", help="also log every metrics message as TensorBoard scalars in DIR (needs the tensorboard package)")

    score = sub.add_parser("score", help="goodness per frame and per layer of a trained stack on a video or a live source (a novelty signal)")
    score.add_argument("--source", help="a video file, webcam:N, rtsp://..., an http:// MJPEG stream, synthetic:N, a dataset "
                       "(default: the source the stack learned from, as its run.json records)")
    score.add_argument("--max-frames", type=int, help="score the first N frames only (a live source without it: until Ctrl-C)")
    score.add_argument("--checkpoint-dir", required=True, help="the layer checkpoints of a trained stack (ffstream run --checkpoint-dir)")
    score.add_argument("--out", required=True, help="CSV: frame, time_s, goodness per layer, novelty")
    score.add_argument("--plot", help="also save a PNG plot here (needs matplotlib)")
    score.add_argument("--batch", type=_positive, default=256, help="frames per forward pass (default 256); bounds memory, not results")
    score.add_argument("--labels", metavar="FILE", help=LABELS_HELP + "; written as a label column")

    ev = sub.add_parser("eval", help="accuracy of saved weights on a labelled source")
    ev.add_argument("--checkpoint-dir", required=True)
    ev.add_argument("--source", help="fashion-mnist[:test], idx:DIR[:split], synthetic:N[:seed=S] or a labelled video FILE "
                    "(default: the test split of the run's dataset, from its run.json)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--labels", metavar="FILE", help=LABELS_HELP)
    embed_arguments(sub.add_parser("embed", help="a trained stack's features of every frame of a source, as .npy or .npz"))
    probe_arguments(sub.add_parser("probe", help="fit a linear probe on a frozen stack's features over one labelled source, score it on another"))
    filters = sub.add_parser("filters", help="save a layer's filters from its checkpoint as a PNG")
    filters.add_argument("--checkpoint-dir", required=True)
    filters.add_argument("--out", required=True, help="the PNG to write, e.g. docs/conv_filters.png")
    filters.add_argument("--layer", type=_positive, default=1, help="which layer, 1-based (default 1)")
    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    learning = bench_sub.add_parser("learning", help="Fashion-MNIST accuracy through the pipeline and the in-process reference")
    sleep_gap = bench_sub.add_parser("sleep-gap", help="accuracy as the sleep worker's snapshot ages (K = 1, 10, 100, 1000, phased)")
    ablations = bench_sub.add_parser("ablations", help="hard vs random negatives, peer normalisation off, mean-of-squares goodness")
    rec = bench_sub.add_parser("recurrent", help="the recurrent (top-down) pipeline against the feedforward one: Fashion-MNIST accuracy, video frames/s and goodness")
    for study in (learning, sleep_gap, ablations, rec):
        study.add_argument("--recipe", help="a recipe (ffstream recipes), a JSON file or a checkpoint directory; default: dense "
                           "1000,1000,1000 (recurrent: 500,500), one epoch of Fashion-MNIST, batch 64")
        study.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                           help="any config field, repeatable, e.g. --set stream.epochs=5 --set model.layers=500,500")
        study.add_argument("--seed", type=int, help="seeds weights, shuffling and negatives (default: the recipe's, 0)")
        study.add_argument("--max-frames", type=_positive, help="train on the first N frames only (a quick check)")
        study.add_argument("--json", action="store_true", help="print the result as JSON")
    sleep_gap.add_argument("--plot", help="save a PNG plot here")
    learning.add_argument("--no-reference", action="store_true", help="skip the in-process reference")
    learning.add_argument("--no-pipeline", action="store_true", help="run the in-process reference only")
    rec.add_argument("--video", default="/usr/share/doc/opencv-doc/examples/data/vtest.avi", help="a video file; 'none' skips the video part")
    rec.add_argument("--video-batch", type=_positive, default=16, help="video frames per source batch (default 16)")
    rec.add_argument("--video-frames", type=_positive, help="frames of the video to use (default: all)")
    rec.add_argument("--video-epochs", type=_positive, default=1, help="passes over the video (a longer, steadier frames/s)")
    rec.add_argument("--no-images", action="store_true", help="skip the Fashion-MNIST part")
    video = bench_sub.add_parser("video", help="unsupervised FF on labelled video streams (shapes, moving Fashion-MNIST): in order, "
                                 "shuffled, untrained, raw pixels and backprop, accuracy and frames/s")
    video.add_argument("--frames", type=_positive, default=30_000, help="training frames per stream (default 30000)")
    video.add_argument("--test-frames", type=_positive, default=10_000, help="frames of the stream the probe is scored on (default 10000)")
    video.add_argument("--seeds", type=_seeds, default=(0, 1), 
                       help="seeds of FF in order, comma-separated; the other rows use the first (default 0,1)")
    video.add_argument("--streams", type=_streams, default=("shapes", "fashion"), help="comma-separated: shapes, fashion (default both)")
    video.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    video.add_argument("--no-pipeline", action="store_true", help="skip the pipeline row (ffstream run --recipe video + ffstream probe)")
    video.add_argument("--probe-garments", type=_non_negative, default=15_000,
                       help="moving Fashion-MNIST: a second probe fitted on one frame each of N train-split garments (default 15000; 0: none)")
    video.add_argument("--json", action="store_true", help="print one JSON object")
    novelty = bench_sub.add_parser("novelty", help="learn a fixed-camera video, then run frozen on it with other footage spliced in: "
                                   "AUROC of goodness per layer, alert latency per insert, false alerts per 1,000 frames")
    novelty.add_argument("--video", help="the training video (default vtest.avi from opencv-doc)")
    novelty.add_argument("--foreign", help="comma-separated video files or 'synthetic', spliced in turn (default Megamind.avi,tree.avi,synthetic)")
    novelty.add_argument("--recipe", default="video-novelty", help="what the training run learns with (default video-novelty; 'none': no recipe, as ffstream run without --recipe)")
    novelty.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="a config field of the training run, repeatable, e.g. --set model.layers=500,500,500")
    novelty.add_argument("--novelty", action="append", default=[], metavar="novelty.KEY=VALUE",
                         help="a novelty.* field of the frozen runs, repeatable (default: the shipped ones)")
    novelty.add_argument("--epochs", type=_positive, default=4, help="training passes over the video (default 4)")
    novelty.add_argument("--max-frames", type=_positive, help="use only the first N frames of the video (a quick check)")
    novelty.add_argument("--inserts", type=_positive, default=6, help="foreign clips spliced in (default 6)")
    novelty.add_argument("--insert-frames", type=_positive, default=50, help="frames per clip (default 50)")
    novelty.add_argument("--lead", type=_positive, default=200, help="training frames before the first insert (default 200)")
    novelty.add_argument("--seed", type=int, default=0, help="the training run's seed (default 0)")
    novelty.add_argument("--json", action="store_true", help="print one JSON object")
    throughput = bench_sub.add_parser("throughput", help="pipeline vs in-process frames/s, FLOP/s vs matmul peak, latency at 30 fps, worker memory")
    throughput.add_argument("--layers", type=_layers, default=(2000, 2000, 2000, 2000), help="layer widths (default 2000,2000,2000,2000)")
    throughput.add_argument("--batch", type=_positive, default=64, help="frames per batch, both runs (default 64)")
    throughput.add_argument("--frames", type=_positive, help="frames for each frames/s run (default 5000; with --delivery-overhead 20000, "
                            "so that a run spans several barriers at stream.barrier_min_s apart)")
    throughput.add_argument("--memory-seconds", type=float, default=600.0, help="length of the memory run, seconds (default 600)")
    throughput.add_argument("--memory-only", action="store_true", help="run only the memory part (layer-worker RSS over --memory-seconds)")
    throughput.add_argument("--delivery-overhead", action="store_true",
                            help="run only the pipeline, with barriers and heartbeats on and off in turn (--pairs times): their cost")
    throughput.add_argument("--pairs", type=_positive, default=2, help="with --delivery-overhead: on/off pairs of runs (default 2)")
    throughput.add_argument("--memory-every", type=float, default=10.0, help="seconds between RSS samples of the memory part's series (default 10)")
    throughput.add_argument("--latency-frames", type=_positive, default=600, help="frames of the 30 frames/s latency run (default 600)")
    throughput.add_argument("--latency-learn-every-rows", type=int,  # default: bench.throughput's, read there (it imports torch)
                            help="latency run: a layer step per this many rows, forwarding at once (default 32; 0: a step per frame)")
    throughput.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    from ffstream.ff.errors import CheckpointError  # not ff.checkpoint: the source and monitor workers import no torch
    from ffstream.monitor.tensorboard_log import TensorBoardMissing
    from ffstream.sources import SourceError

    try:
        if args.command == "run":
            from ffstream.commands.run import run_command

            return run_command(args)
        if args.command == "recipes":
            from ffstream.commands.recipes import recipes_command

            return recipes_command(args)
        if args.command == "worker":
            from ffstream.commands.worker import worker_command

            return worker_command(args)
        if args.command == "check":
            from ffstream.commands.check import check_command

            return check_command(args)
        if args.command == "keys":
            from ffstream.commands.keys import keys_command

            return keys_command(args)
        if args.command == "monitor":
            from ffstream.commands.monitor import monitor_command

            return monitor_command(args)
        if args.command == "bench":
            from ffstream.commands.bench import bench_command

            return bench_command(args)
        if args.command == "score":
            from ffstream.commands.score import score_command

            return score_command(args)
        if args.command == "filters":
            from ffstream.offline.filters import save_filters

            shape = save_filters(args.checkpoint_dir, args.out, args.layer)
            print(f"{args.out}: {shape[0]} filters of {shape[1]}x{shape[2]}x{shape[3]}")
            return 0
        if args.command == "embed":
            from ffstream.commands.embed import embed_command

            return embed_command(args)
        if args.command == "probe":
            from ffstream.commands.probe import probe_command

            return probe_command(args)
        if args.command == "eval":
            from ffstream.commands.evaluate import eval_command

            return eval_command(args)
    except (UserError, ConfigError, SourceError, CheckpointError, TensorBoardMissing, OSError) as exc:
        print(f"ffstream {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE
