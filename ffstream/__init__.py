"""ffstream: learn from live video with the Forward-Forward algorithm, one worker process per layer.

>>> import ffstream
>>> stack = ffstream.load("ck")   # doctest: +SKIP  a checkpoint directory of `ffstream run --checkpoint-dir ck`
>>> stack.embed(frames), stack.goodness(frames), stack.novelty(frames)   # doctest: +SKIP
>>> ffstream.score("ck", "clip.mp4"), ffstream.evaluate("ck"), ffstream.embed("ck", "clip.mp4")   # doctest: +SKIP

`load`, `Stack` and the rest of ffstream.offline.api are imported on first use (module __getattr__), so `import ffstream` and `ffstream --help`
stay free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Embedding", "Scores", "Stack", "__version__", "embed", "evaluate", "load", "save_embedding", "save_scores", "score"]

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time the names load lazily below
    from ffstream.offline.api import Embedding, Scores, Stack, embed, evaluate, load, save_embedding, save_scores, score

_LAZY = set(__all__) - {"__version__"}  # names of ffstream.offline.api, which imports torch


def __getattr__(name: str) -> Any:
    """The API's names, imported from ffstream.offline.api when first asked for."""
    if name in _LAZY:
        from ffstream.offline import api

        return getattr(api, name)
    raise AttributeError(f"module 'ffstream' has no attribute {name!r}")
