"""Learning benchmark, runnable from a checkout: the same as `ffstream bench learning`.

    python benchmarks/learning.py --task supervised --layers 1000,1000,1000 --epochs 1
"""

import sys

from ffstream.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "learning", *sys.argv[1:]]))
