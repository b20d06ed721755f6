"""The `ffstream` command: run, worker, monitor, score, eval, ..."""

from __future__ import annotations

import argparse
import logging
import sys

from ffstream import __version__
from ffstream.bench.throughput import LATENCY_LEARN_EVERY_ROWS
from ffstream.commands.check import add_arguments as check_arguments
from ffstream.commands.probe import LABELS_HELP
from ffstream.commands.probe import add_arguments as probe_arguments
from ffstream.config import (
    DEFAULT_LR,
    DEFAULT_MONITOR,
    DEFAULT_MONITOR_HTTP,
    RECURRENT_IMAGE_LR,
    ConfigError,
)

EXIT_USAGE = 2  # bad flags, config, input files or checkpoints: a one-line message, no traceback


class UserError(Exception):
    """Anything the user can fix; main() prints it on one line and exits 2."""


def _layers(text: str) -> tuple[int | str, ...]:
    """--layers: dense widths (2000,2000) or specs (conv:32x3x3,conv:64x3x3/2,dense:1000), kept as the config holds them."""
    from ffstream.ff.spec import parse_layers

    try:
        specs = parse_layers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"in {text!r}: {exc}") from None
    return tuple(s.size if s.kind == "dense" else str(s) for s in specs)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 28x28, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return (h, w)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _window(text: str) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST,LAST such as 3,5, got {text!r}") from None
    return (first, last)


def _non_negative(text: str) -> int:
    return 0 if text == "0" else _positive(text)


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Bad flags get one line naming the flag, and exit 2; `--help` still shows the usage."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ffstream", description="Learn from live video with the Forward-Forward algorithm, one process per layer.")
    parser.add_argument("--version", action="version", version=f"ffstream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the whole stack locally, one OS process per worker")
    run.add_argument("--config", help="JSON config file (sections stream, model, sleep, topology); flags override it")
    run.add_argument("--source", help="synthetic[:N][:seed=S] (default synthetic; seed=S: the clip's own seed, apart from --seed), a video FILE (labelled by FILE's same-stem .csv if there is one), webcam:N, rtsp://..., idx:DIR[:train|test], fashion-mnist[:train|test]")
    run.add_argument("--layers", type=_layers, help="layers bottom up: dense widths, e.g. 2000,2000,2000, or conv:CxKHxKW[/S][+pool], local:CxKHxKW[/S][+pool], dense:N "
                     "(default 500,500,500; for video try the default conv stack conv:16x5x5/2,conv:32x3x3/2,conv:64x3x3/2)")
    run.add_argument("--competition", action="store_true", default=None, help="channel-wise competition (CwComp): conv/local channels in one group per class, labels as targets; negatives: the sleep worker's hybrids (a hybrid is no class) or none (--no-sleep)")
    run.add_argument("--outlier-weight", type=_weight, help="with --competition and the sleep worker: how much a hybrid's loss (its class scores pulled toward uniform: none of the classes) weighs against a positive's, in the layers that see the whole frame (default 0.005)")
    run.add_argument("--region", type=_positive, help="conv/local: goodness pooled over RxR output locations, each region its own loss; larger than the map: the whole map (default 1)")
    run.add_argument("--batch-norm", action="store_true", default=None, help="conv/local: each channel standardised by running statistics, then ReLU, before it goes up")
    run.add_argument("--batch-stats", action="store_true", default=None, help="conv/local with --competition: CwComp's batch norm, each channel standardised by the learning batch's statistics (running ones at test), class scores read there")
    run.add_argument("--task", choices=("supervised", "unsupervised"), help="default: supervised when the source has labels")
    run.add_argument("--max-frames", type=_positive, help="stop after N frames")
    run.add_argument("--epochs", type=_positive, help="passes over a file or dataset (default 1)")
    run.add_argument("--batch", type=_positive, help="frames per batch (default 64)")
    run.add_argument("--sleep-every", type=_positive, help="wake batches between the sleep worker's snapshot refreshes, as the layers step them (a recurrent image: one per iteration; default 10)")
    run.add_argument("--negatives", choices=("random", "hard", "hybrid"), help="negative data (default: random wrong labels when supervised, hybrid frames otherwise and with --competition)")
    run.add_argument("--no-sleep", action="store_true", help="run without the sleep worker (positive updates only)")
    run.add_argument("--sleep-route", choices=("snapshot", "chain"),
                     help="negatives for layers 2..L: made by the sleep worker on snapshots (default), or passed up by each layer (chain)")
    run.add_argument("--learn-every-rows", type=_positive, help="live video: forward each frame at once, learn one step per this many rows (needs sleep)")
    run.add_argument("--learn-every-ms", type=float, help="live video: forward each frame at once, learn on what is ready this many ms after the last step")
    run.add_argument("--wire-float16", action="store_true", default=None, help="send activity between workers as float16 (computed in float32)")
    run.add_argument("--lr", type=float, help=f"layer learning rate (default {DEFAULT_LR:g}; {RECURRENT_IMAGE_LR:g} for a recurrent run on images, whose every image makes --iterations steps)")
    run.add_argument("--label-scale", type=float, help="supervised: value of the label slot written into the frame (default 4.0)")
    run.add_argument("--label-relative", action="store_true", default=None,
                     help="supervised: the label slot is --label-scale times the frame's RMS, so it weighs the same in every frame")
    run.add_argument("--optimizer", choices=("adam", "sgd"), help="layer optimiser (default adam)")
    run.add_argument("--goodness", choices=("sumsq", "meansq"), help="goodness function (default sumsq)")
    run.add_argument("--variant", choices=("max", "min"), help="positives have high (max, default) or low (min) goodness")
    run.add_argument("--size", type=_size, help="frame size HxW after resizing (default 28x28)")
    run.add_argument("--color", action="store_true", default=None, help="keep RGB colour (default grey)")
    run.add_argument("--checkpoint-dir", help="save layer checkpoints and the softmax head here; resume from them if present")
    run.add_argument("--scores", help="write per-frame goodness per layer to this JSONL file")
    run.add_argument("--monitor", help=f"address where the monitor publishes metrics (default {DEFAULT_MONITOR})")
    run.add_argument("--http", help=f"where the monitor serves the web dashboard and Prometheus /metrics (default {DEFAULT_MONITOR_HTTP}; port 0: any free port; none: off)")
    run.add_argument("--summary-json", help="write the end-of-run figures to this file")
    run.add_argument("--seed", type=int, help="seed for weights, shuffling and negatives (default 0)")
    run.add_argument("--device", help="torch device for the layers: cpu (default), cuda, cuda:N")
    run.add_argument("--threads", type=_positive, help="torch threads per worker (default: cores / compute workers)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--recurrent", action="store_true", default=None, help="the paper's recurrent net: each layer also hears the layer above, one step late")
    run.add_argument("--iterations", type=_positive, help="recurrent, image datasets: steps per image (default 8); video: a step a frame")
    run.add_argument("--window", type=_window, help="recurrent, image datasets: steps FIRST,LAST (1-based) that classify (default 3,5)")
    run.add_argument("--labels", metavar="FILE", help=LABELS_HELP)
    run.add_argument("--tensorboard", metavar="DIR", help="also log every worker's metrics as TensorBoard scalars in DIR (needs the tensorboard package)")

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

    score = sub.add_parser("score", help="goodness per frame and per layer of a trained stack on a video (a novelty signal)")
    score.add_argument("--source", required=True, help="a video file")
    score.add_argument("--checkpoint-dir", required=True, help="the layer checkpoints of a trained stack (ffstream run --checkpoint-dir)")
    score.add_argument("--out", required=True, help="CSV: frame, time_s, goodness per layer, novelty")
    score.add_argument("--plot", help="also save a PNG plot here (needs matplotlib)")
    score.add_argument("--batch", type=_positive, default=256, help="frames per forward pass (default 256); bounds memory, not results")
    score.add_argument("--labels", metavar="FILE", help=LABELS_HELP + "; written as a label column")

    ev = sub.add_parser("eval", help="accuracy of saved weights on a labelled source")
    ev.add_argument("--checkpoint-dir", required=True)
    ev.add_argument("--source", required=True, help="fashion-mnist[:test], idx:DIR[:split], synthetic:N[:seed=S] or a labelled video FILE")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--labels", metavar="FILE", help=LABELS_HELP)
    probe_arguments(sub.add_parser("probe", help="fit a linear probe on a frozen stack's features over one labelled source, score it on another"))
    filters = sub.add_parser("filters", help="save a layer's filters from its checkpoint as a PNG")
    filters.add_argument("--checkpoint-dir", required=True)
    filters.add_argument("--out", required=True, help="the PNG to write, e.g. docs/conv_filters.png")
    filters.add_argument("--layer", type=_positive, default=1, help="which layer, 1-based (default 1)")
    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    learning = bench_sub.add_parser("learning", help="Fashion-MNIST accuracy through the pipeline and the in-process reference")
    studies = [
        bench_sub.add_parser("sleep-gap", help="accuracy as the sleep worker's snapshot ages (K = 1, 10, 100, 1000, phased)"),
        bench_sub.add_parser("ablations", help="hard vs random negatives, peer normalisation off, mean-of-squares goodness"),
    ]
    for study in studies:
        study.add_argument("--layers", type=_layers, default=(1000, 1000, 1000), help="layer widths (default 1000,1000,1000)")
        study.add_argument("--epochs", type=_positive, default=1, help="passes over the 60,000 training images (default 1)")
        study.add_argument("--batch", type=_positive, default=64, help="frames per source batch (default 64)")
        study.add_argument("--sleep-every", type=_positive, default=10, help="the default K (ablations; the phased run's phase length)")
        study.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling and negatives (default 0)")
        study.add_argument("--max-frames", type=_positive, help="train on the first N frames only (a quick check)")
        study.add_argument("--json", action="store_true", help="print the rows as one JSON list")
        study.add_argument("--plot", help="save a PNG plot here (sleep-gap)")
    learning.add_argument("--task", choices=("supervised", "unsupervised"), default="supervised", help="supervised: labels in the frames, scored by energy, head and probe; unsupervised: hybrid negatives, scored by the probe (default supervised)")
    learning.add_argument("--layers", type=_layers, default=(1000, 1000, 1000), help="as for run: widths or conv/local/dense specs")
    learning.add_argument("--competition", action="store_true", help="channel-wise competition (CwComp) in conv/local layers; its negatives are the sleep worker's hybrids (or none: --no-sleep)")
    learning.add_argument("--outlier-weight", type=_weight, default=0.005, help="with --competition and the sleep worker: how much a hybrid's loss (its class scores pulled toward uniform: none of the classes) weighs against a positive's, in the layers that see the whole frame (default 0.005)")
    learning.add_argument("--region", type=int, default=1, help="conv/local: goodness region, RxR locations; larger than the map: the whole map (default 1)")
    learning.add_argument("--batch-norm", action="store_true", help="conv/local: each channel standardised by running statistics, then ReLU, before it goes up")
    learning.add_argument("--batch-stats", action="store_true", help="conv/local with --competition: CwComp's batch norm, each channel standardised by the learning batch's statistics (running ones at test), class scores read there")
    learning.add_argument("--size", type=_size, default=(28, 28), help="frame size HxW (default 28x28)")
    learning.add_argument("--threads", type=_positive, help="torch threads per worker (default: cores / compute workers) and of the in-process reference (default: torch's)")
    learning.add_argument("--epochs", type=_positive, default=1, help="passes over the 60,000 training images (default 1)")
    learning.add_argument("--batch", type=_positive, default=64, help="frames per source batch (default 64)")
    learning.add_argument("--sleep-every", type=_positive, default=10, help="wake batches between the sleep worker's snapshot refreshes (default 10)")
    learning.add_argument("--negatives", choices=("random", "hard", "hybrid"), help="how the sleep worker makes negatives (default: random wrong labels if supervised, hybrids if not or with --competition)")
    learning.add_argument("--no-sleep", action="store_true", help="run without the sleep worker (positive updates only; CwComp learns so)")
    learning.add_argument("--sleep-route", choices=("snapshot", "chain"), default="snapshot",
                          help="negatives for layers 2..L: made on snapshots (default), or passed up by each layer at its step (chain)")
    learning.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"learning rate of every layer (default {DEFAULT_LR:g})")
    learning.add_argument("--label-scale", type=float, default=4.0, help="supervised: value of the label slot (default 4.0)")
    learning.add_argument("--label-relative", action="store_true", help="supervised: the label slot is --label-scale times the frame's RMS")
    learning.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling and negatives (default 0)")
    learning.add_argument("--max-frames", type=_positive, help="train on the first N frames only (a quick check)")
    learning.add_argument("--no-reference", action="store_true", help="skip the in-process reference")
    learning.add_argument("--no-pipeline", action="store_true", help="run the in-process reference only")
    learning.add_argument("--json", action="store_true", help="print one JSON object")
    rec = bench_sub.add_parser("recurrent", help="the recurrent (top-down) pipeline against the feedforward one: Fashion-MNIST accuracy, video frames/s and goodness")
    rec.add_argument("--layers", type=_layers, default=(500, 500), help="layer widths, the same for both pipelines (default 500,500)")
    rec.add_argument("--epochs", type=_positive, default=1, help="Fashion-MNIST: passes over the 60,000 training images (default 1)")
    rec.add_argument("--batch", type=_positive, default=64, help="Fashion-MNIST: images per source batch (default 64)")
    rec.add_argument("--max-frames", type=_positive, help="Fashion-MNIST: train on the first N frames only")
    rec.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"learning rate of every layer, both pipelines (default {DEFAULT_LR:g})")
    rec.add_argument("--iterations", type=_positive, default=8, help="recurrent steps per image (default 8)")
    rec.add_argument("--window", type=_window, default=(3, 5), help="steps FIRST,LAST (1-based) whose goodness classifies (default 3,5)")
    rec.add_argument("--video", default="/usr/share/doc/opencv-doc/examples/data/vtest.avi", help="a video file; 'none' skips the video part")
    rec.add_argument("--video-batch", type=_positive, default=16, help="video frames per source batch (default 16)")
    rec.add_argument("--video-frames", type=_positive, help="frames of the video to use (default: all)")
    rec.add_argument("--video-epochs", type=_positive, default=1, help="passes over the video (a longer, steadier frames/s)")
    rec.add_argument("--no-images", action="store_true", help="skip the Fashion-MNIST part")
    rec.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling and negatives (default 0)")
    rec.add_argument("--json", action="store_true", help="print one JSON object")
    throughput = bench_sub.add_parser("throughput", help="pipeline vs in-process frames/s, FLOP/s vs matmul peak, latency at 30 fps, worker memory")
    throughput.add_argument("--layers", type=_layers, default=(2000, 2000, 2000, 2000), help="layer widths (default 2000,2000,2000,2000)")
    throughput.add_argument("--batch", type=_positive, default=64, help="frames per batch, both runs (default 64)")
    throughput.add_argument("--frames", type=_positive, default=5000, help="frames for each frames/s run (default 5000)")
    throughput.add_argument("--memory-seconds", type=float, default=600.0, help="length of the memory run, seconds (default 600)")
    throughput.add_argument("--memory-only", action="store_true", help="run only the memory part (layer-worker RSS over --memory-seconds)")
    throughput.add_argument("--memory-every", type=float, default=10.0, help="seconds between RSS samples of the memory part's series (default 10)")
    throughput.add_argument("--latency-frames", type=_positive, default=600, help="frames of the 30 frames/s latency run (default 600)")
    throughput.add_argument("--latency-learn-every-rows", type=int, default=LATENCY_LEARN_EVERY_ROWS,
                            help=f"latency run: a layer step per this many rows, forwarding at once (default {LATENCY_LEARN_EVERY_ROWS}; 0: a step per frame)")
    throughput.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    from ffstream.ff.checkpoint import CheckpointError
    from ffstream.monitor.tensorboard_log import TensorBoardMissing
    from ffstream.sources import SourceError

    try:
        if args.command == "run":
            from ffstream.commands.run import run_command

            return run_command(args)
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
