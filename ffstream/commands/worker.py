"""`ffstream worker KIND`: one worker in the foreground, configured by file and FFSTREAM_* variables.

`ffstream worker standby` is the supervisor's warm spare: it imports everything a worker needs (torch
above all, a few seconds), then waits on stdin for one line naming the worker it is to become, so that a
crashed worker is replaced in a fraction of a second instead of a fresh process's start-up.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import torch

from ffstream import config
from ffstream.ff import FFLayer, LayerConfig
from ffstream.net import security
from ffstream.workers import lifeline, malloc
from ffstream.workers.base import EXIT_GAVE_UP, GaveUp
from ffstream.workers.build import KINDS, build_worker, thread_budget

STANDBY = "standby"


def worker_command(args) -> int:
    malloc.tune_for_workers()  # before the sockets and the model allocate: RSS levels off (see ffstream/malloc.py)
    lifeline.die_with_parent(lifeline.parent_from_env())  # under `ffstream run`: never outlive the supervisor
    if args.kind == STANDBY:
        warm_up(config.load(args.config))
        if not take_assignment(args):
            return 0  # the supervisor closed our stdin without an assignment: it is shutting down
    cfg = config.load(args.config)
    torch.set_num_threads(thread_budget(cfg))
    worker = build_worker(args.kind, cfg, index=args.index, final_stats_dir=args.stats_dir)
    if cfg.security.curve_dir:
        # its role's pair (one per role: the shared "worker" pair of old key directories is refused in one line)
        security.enable(worker.context, cfg.security.curve_dir, cfg.security.curve_client or worker.kind, role=worker.kind)
    elif cfg.security.allow_plaintext:
        security.allow_plaintext(worker.context)  # else a non-loopback tcp bind is refused in one line
    worker.handle_signals()
    if os.environ.get("FFSTREAM_HEAP_LOG_S"):  # diagnostics: the heap's figures in this worker's log, every N seconds
        malloc.log_heap_every(float(os.environ["FFSTREAM_HEAP_LOG_S"]), lambda: repr(worker))
    try:
        worker.run()
    except GaveUp as exc:
        print(f"ffstream worker {args.kind}: error: {exc}", file=sys.stderr)  # the supervisor passes this line on
        return EXIT_GAVE_UP
    return 0


def warm_up(cfg: config.RunConfig) -> None:
    """Pay torch's first-use costs now rather than when taking over: building the first optimiser imports
    torch._dynamo (over 2 s, measured). One step of a tiny dense layer with the run's optimiser covers it.
    Best effort: a failure here costs only the time it would have saved."""
    try:
        first = cfg.layer_configs()[0]
        layer = FFLayer(LayerConfig(in_features=8, width=8, optimizer=first.optimizer))
        grads, _, _ = layer.wake(torch.rand(4, 8))
        layer.apply_gradients(grads)
    except Exception as exc:  # noqa: BLE001 - nothing here may stop the spare from taking over
        logging.getLogger("ffstream.standby").warning("warm-up failed (%s); the spare is slower to take over", exc)


def take_assignment(args) -> bool:
    """Block until the supervisor writes {"kind", "index", "log"} on stdin; become that worker, logging to "log".

    False on end of input. A malformed assignment is a usage error (config.ConfigError, exit 2).
    """
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return False
    try:
        assignment = json.loads(line)
        kind, index, log_path = assignment["kind"], assignment.get("index"), assignment["log"]
    except (ValueError, KeyError, TypeError) as exc:
        raise config.ConfigError(f"standby worker: bad assignment {line[:200]!r} ({exc})") from None
    if kind not in KINDS or not (index is None or isinstance(index, int)) or not isinstance(log_path, str):
        raise config.ConfigError(f"standby worker: bad assignment {line[:200]!r}")
    args.kind, args.index = kind, index
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    for fd in (1, 2):  # the logging handler writes to sys.stderr, i.e. to fd 2: it follows
        os.dup2(log_fd, fd)
    os.close(log_fd)
    return True
