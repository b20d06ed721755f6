"""Throughput benchmark, runnable from a checkout: the same as `ffstream bench throughput`.

    python benchmarks/throughput.py --layers 2000,2000,2000,2000 --batch 64 --memory-seconds 600
"""

import sys

from ffstream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "throughput", *sys.argv[1:]]))
