"""`ffstream worker KIND`: one worker in the foreground, configured by file and FFSTREAM_* variables."""

from __future__ import annotations

import torch

from ffstream import config, security
from ffstream.workers.build import build_worker, thread_budget


def worker_command(args) -> int:
    cfg = config.load(args.config)
    torch.set_num_threads(thread_budget(cfg))
    worker = build_worker(args.kind, cfg, index=args.index, final_stats_dir=args.stats_dir)
    if cfg.security.curve_dir:
        security.enable(worker.context, cfg.security.curve_dir, cfg.security.curve_client)
    worker.handle_signals()
    worker.run()
    return 0
