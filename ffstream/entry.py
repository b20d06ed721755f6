"""The `ffstream` console script: `ffstream check` without importing torch (it is a frequent probe), else the CLI.

`ffstream run` with a webcam that does not exist fails here too, before torch is imported.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["check"]:
        from ffstream.commands.check import main as check_main

        return check_main(args[1:])
    if args[:1] == ["run"]:
        from ffstream.sources.preflight import missing_webcam

        error = missing_webcam(run_source(args[1:]) or "")
        if error:
            print(f"ffstream run: error: {error}", file=sys.stderr)
            return 2
    from ffstream.cli import main as cli_main

    return cli_main(argv)


def run_source(argv: list[str]) -> str | None:
    """The value of `--source` in `ffstream run` arguments, as argparse would read it (the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--source" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--source="):
            value = arg.split("=", 1)[1]
    return value
