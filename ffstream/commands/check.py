"""`ffstream check`: exit 0 only when a worker's heartbeat is fresh, its process alive and its peers reached.

It runs as a docker-compose healthcheck and a Kubernetes probe every few seconds, so it must be quick: it
imports neither torch nor the rest of ffstream (ffstream.entry sends `ffstream check` here directly).
"""

from __future__ import annotations

import argparse
import os

from ffstream.monitor import health


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker", help="the worker's name: source, layer1, sleep, sink, monitor ... (default: every heartbeat in --dir)")
    parser.add_argument("--max-age", type=float, default=health.DEFAULT_MAX_AGE_S, help=f"seconds a heartbeat stays fresh (default {health.DEFAULT_MAX_AGE_S:g})")
    parser.add_argument("--dir", help=f"heartbeat directory (default $FFSTREAM_HEALTH_DIR, else {health.DEFAULT_DIR})")
    parser.add_argument("--live", action="store_true", help="alive is enough; don't require connected peers (liveness probes)")


def check_command(args) -> int:
    directory = args.dir or os.environ.get("FFSTREAM_HEALTH_DIR") or health.DEFAULT_DIR
    ok, lines = health.check(directory, args.worker, max_age_s=args.max_age, need_connected=not args.live)
    for line in lines:
        print(line)
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ffstream check", description="exit 0 only when a worker is alive and connected")
    add_arguments(parser)
    return check_command(parser.parse_args(argv))
