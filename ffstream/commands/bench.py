"""`ffstream bench ...`: run a benchmark and print its figures (one JSON object with --json)."""

from __future__ import annotations

import json


def bench_command(args) -> int:
    if args.bench == "learning":
        from ffstream.bench.learning import (
            format_result,
            learning_benchmark,
            learning_config,
        )

        cfg = learning_config(args.task, args.layers, args.epochs, args.batch, args.sleep_every, args.negatives, args.lr, args.seed, max_frames=args.max_frames, sleep=not args.no_sleep,
                              sleep_route=args.sleep_route, competition=args.competition, region=args.region, batch_norm=args.batch_norm, batch_stats=args.batch_stats, outlier_weight=args.outlier_weight, label_scale=args.label_scale, label_relative=args.label_relative)
        cfg.stream.size, cfg.threads = args.size, args.threads
        cfg.check()
        result = learning_benchmark(cfg, reference=not args.no_reference, pipeline=not args.no_pipeline)
        print(json.dumps(result) if args.json else format_result(result), flush=True)
        return 0
    if args.bench == "recurrent":
        from ffstream.bench.recurrent import format_result as format_recurrent
        from ffstream.bench.recurrent import recurrent_benchmark

        video = None if args.video == "none" else args.video
        result = recurrent_benchmark(args.layers, args.epochs, args.batch, args.max_frames, args.iterations, args.window, video,
                                     args.video_batch, args.video_frames, images=not args.no_images, seed=args.seed,
                                     video_epochs=args.video_epochs, lr=args.lr)
        print(json.dumps(result) if args.json else format_recurrent(result), flush=True)
        return 0
    if args.bench == "throughput":
        from ffstream.bench.throughput import format_result as format_throughput
        from ffstream.bench.throughput import throughput_benchmark

        if args.memory_only:
            from ffstream.bench.throughput import format_memory, memory_benchmark

            result = memory_benchmark(args.layers, args.batch, args.memory_seconds, args.memory_every)
            print(json.dumps(result) if args.json else format_memory(result), flush=True)
            return 0
        result = throughput_benchmark(args.layers, args.batch, args.frames, args.memory_seconds, latency_frames=args.latency_frames,
                                      latency_learn_every_rows=args.latency_learn_every_rows, memory_every_s=args.memory_every)
        print(json.dumps(result) if args.json else format_throughput(result), flush=True)
        return 0
    if args.bench in ("sleep-gap", "ablations"):
        from ffstream.bench import studies
        from ffstream.bench.learning import learning_config

        cfg = learning_config("supervised", args.layers, args.epochs, args.batch, args.sleep_every, None, 1e-3, args.seed, max_frames=args.max_frames)
        cfg.check()
        rows = studies.sleep_gap(cfg) if args.bench == "sleep-gap" else studies.ablations(cfg)
        print(json.dumps(rows) if args.json else studies.markdown(rows), flush=True)
        if args.plot and args.bench == "sleep-gap":
            studies.plot(rows, args.plot)
        return 0
    return 2
