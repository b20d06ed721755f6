"""`ffstream worker KIND`: one worker in the foreground, configured by file and FFSTREAM_* variables.

`ffstream worker standby` is the supervisor's warm spare: it imports everything a worker needs (torch
above all, a few seconds), then waits on stdin for one line naming the worker it is to become, so that a
crashed worker is replaced in a fraction of a second instead of a fresh process's start-up.
"""

from __future__ import annotations

import json
import os
import sys

from ffstream import config
from ffstream.net import security
from ffstream.workers import lifeline, malloc
from ffstream.workers.base import EXIT_GAVE_UP, GaveUp
from ffstream.workers.build import KINDS, TORCH_KINDS, build_worker, thread_budget

STANDBY = "standby"


def worker_command(args) -> int:
    malloc.tune_for_workers()  # before the sockets and the model allocate: RSS levels off (see ffstream/malloc.py)
    lifeline.die_with_parent(lifeline.parent_from_env())  # under `ffstream run`: never outlive the supervisor
    if args.kind == STANDBY:
        preload()
        if not take_assignment(args):
            return 0  # the supervisor closed our stdin without an assignment: it is shutting down
    cfg = config.load(args.config)
    if args.kind in TORCH_KINDS:  # the source and monitor workers never import torch (a second of start-up)
        import torch

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


def preload() -> None:
    """The spare's head start: what the torch kinds import (torch above all, 1-2 s of CPU), imported now rather than
    when it takes over. Their first optimiser no longer imports torch._dynamo (ff/optim.py), and a first step after
    these imports takes about 10 ms (measured): nothing else is worth paying ahead."""
    import torch  # noqa: F401

    from ffstream.workers import layer, recurrent_sleep, sink, sleep  # noqa: F401
    from ffstream.workers.layer import recurrent  # noqa: F401


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
