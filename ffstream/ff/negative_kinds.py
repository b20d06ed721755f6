"""The sleep worker's kinds of negative data, and which need labels: read by config checks without torch."""

from __future__ import annotations

NEGATIVE_KINDS = ("random", "hard", "hybrid", "scff", "temporal")
UNLABELLED_KINDS = ("hybrid", "scff", "temporal")  # made from frames alone
PAIRED_KINDS = ("scff", "temporal")  # two frames stacked, for a layer 1 that sees pairs (stream.pairs)


def check_labelled(kind: str, labelled: bool, prefix: str = "") -> None:
    """Wrong-label negatives need labels, stated once: the Dreamer checks its stream with it, config/rules.py the run's
    (prefix "sleep."). ValueError names the field as its reader spells it."""
    if kind not in UNLABELLED_KINDS and not labelled:
        raise ValueError(f"{prefix}negatives {kind!r} needs labels; an unlabelled stream uses 'hybrid', 'scff' or 'temporal'")
