"""`ffstream keys generate DIR`: CURVE key pairs for links between hosts (see ffstream.net.security)."""

from __future__ import annotations

from pathlib import Path

from ffstream.net import security


def keys_command(args) -> int:
    directory = Path(args.dir)
    written = security.generate(directory, tuple(args.client or security.DEFAULT_CLIENTS))
    for path in written:
        print(path)
    kept = sorted({p.name for p in directory.glob("*.key_secret")} - {p.name for p in written})
    if kept:
        print(f"kept existing pairs: {', '.join(kept)}")
    print(f"point every worker at it with FFSTREAM_SECURITY_CURVE_DIR={directory.resolve()}; keep the *.key_secret files private")
    return 0
