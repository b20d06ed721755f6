"""`ffstream bench ...`: run a benchmark and print its figures (one JSON object with --json).

The learning benchmarks (learning, sleep-gap, ablations, recurrent) take their run from a recipe and --set, like
`ffstream run`; without a recipe they start from BENCH_BASE. Their own flags are only what no run has:
--json, --no-reference, --no-pipeline, --plot, the recurrent bench's video part; --max-frames and --seed on top.
"""

from __future__ import annotations

import json

# The learning benches' starting point, below any recipe: a Fashion-MNIST epoch (10 classes) through dense
# 3x1000 at the layers' default rate, as BENCHMARKS.md's first tables; the recurrent bench compares 2x500.
BENCH_BASE = {
    "stream": {"source": "fashion-mnist:train", "task": "supervised", "num_classes": 10, "batch": 64, "epochs": 1},
    "model": {"layers": [1000, 1000, 1000], "lr": 1e-3},
}
RECURRENT_BASE = {**BENCH_BASE, "model": {"layers": [500, 500], "lr": 1e-3}}


def bench_config(args, base: dict = BENCH_BASE):
    """BENCH_BASE < --recipe < --set < --max-frames / --seed; the environment's FFSTREAM_* are not read (a bench is its command line)."""
    from ffstream.config import load

    flags = {"stream": {"max_frames": args.max_frames, "seed": args.seed}}
    return load(base=base, recipe=args.recipe, sets=args.sets, overrides=flags, environ={})


def bench_command(args) -> int:
    if args.bench == "learning":
        from ffstream.bench.learning import format_result, learning_benchmark

        cfg = bench_config(args)
        result = learning_benchmark(cfg, reference=not args.no_reference, pipeline=not args.no_pipeline)
        print(json.dumps(result) if args.json else format_result(result), flush=True)
        return 0
    if args.bench == "recurrent":
        from ffstream.bench.recurrent import format_result as format_recurrent
        from ffstream.bench.recurrent import recurrent_benchmark

        cfg = bench_config(args, RECURRENT_BASE)
        m, s = cfg.model, cfg.stream
        video = None if args.video == "none" else args.video
        result = recurrent_benchmark(m.layers, s.epochs, s.batch, s.max_frames, m.iterations, tuple(m.window), video,
                                     args.video_batch, args.video_frames, images=not args.no_images, seed=s.seed,
                                     video_epochs=args.video_epochs, lr=cfg.layer_lr)
        print(json.dumps(result) if args.json else format_recurrent(result), flush=True)
        return 0
    if args.bench == "throughput":
        from ffstream.bench.throughput import LATENCY_LEARN_EVERY_ROWS, throughput_benchmark
        from ffstream.bench.throughput import format_result as format_throughput

        if args.delivery_overhead:
            from ffstream.bench.overhead import delivery_overhead, format_overhead

            result = delivery_overhead(args.layers, args.batch, args.frames or 20_000, args.pairs)
            print(json.dumps(result) if args.json else format_overhead(result), flush=True)
            return 0
        if args.memory_only:
            from ffstream.bench.throughput import format_memory, memory_benchmark

            result = memory_benchmark(args.layers, args.batch, args.memory_seconds, args.memory_every)
            print(json.dumps(result) if args.json else format_memory(result), flush=True)
            return 0
        every = LATENCY_LEARN_EVERY_ROWS if args.latency_learn_every_rows is None else args.latency_learn_every_rows
        result = throughput_benchmark(args.layers, args.batch, args.frames or 5000, args.memory_seconds, latency_frames=args.latency_frames,
                                      latency_learn_every_rows=every, memory_every_s=args.memory_every)
        print(json.dumps(result) if args.json else format_throughput(result), flush=True)
        return 0
    if args.bench == "video":
        return video_command(args)
    if args.bench == "novelty":
        return novelty_command(args)
    if args.bench in ("sleep-gap", "ablations"):
        from ffstream.bench import studies

        cfg = bench_config(args)
        rows = studies.sleep_gap(cfg) if args.bench == "sleep-gap" else studies.ablations(cfg)
        print(json.dumps(rows) if args.json else studies.markdown(rows), flush=True)
        if getattr(args, "plot", None) and args.bench == "sleep-gap":
            studies.plot(rows, args.plot)
        return 0
    return 2


def video_command(args) -> int:
    """`bench video`: progress on stderr, the figures on stdout; Ctrl-C stops it at once with one line (exit 130)."""
    import sys
    import time

    from ffstream.bench.video import VideoBenchConfig, format_result, progress_line, video_benchmark

    cfg = VideoBenchConfig(frames=args.frames, test_frames=args.test_frames, seeds=args.seeds, streams=args.streams,
                           threads=args.threads, pipeline=not args.no_pipeline, probe_garments=args.probe_garments)
    started = time.monotonic()
    try:
        result = video_benchmark(cfg, progress_line)
    except KeyboardInterrupt:
        print(f"ffstream bench video: interrupted after {time.monotonic() - started:.0f} s; no figures", file=sys.stderr, flush=True)
        return 130
    print(json.dumps(result) if args.json else format_result(result), flush=True)
    return 0


def novelty_command(args) -> int:
    """`bench novelty`: progress on stderr, the figures on stdout; a failed run or bad flag is one line and exit 2."""
    import sys

    from ffstream.bench.novelty import NoveltyBenchConfig, format_result, novelty_benchmark

    cfg = NoveltyBenchConfig(recipe=None if args.recipe == "none" else args.recipe, sets=args.sets, epochs=args.epochs,
                             max_frames=args.max_frames, inserts=args.inserts, insert_frames=args.insert_frames,
                             lead=args.lead, novelty=args.novelty, seed=args.seed)
    if args.video:
        cfg.video = args.video
    if args.foreign:
        cfg.foreign = tuple(f.strip() for f in args.foreign.split(",") if f.strip())
    try:
        result = novelty_benchmark(cfg, lambda line: print(f"bench novelty: {line}", file=sys.stderr, flush=True))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"ffstream bench novelty: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_result(result), flush=True)
    return 0
