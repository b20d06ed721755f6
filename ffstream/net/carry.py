"""Learn messages that carry the chosen layers' activity up to the sink (`topology.features`).

The sink receives only what the top layer sends. So that it can publish every chosen layer's normalised activity of
every frame, each layer, when features are on, sends its learn messages as (B, sum(blocks)): the chosen layers'
activity from below, then its own activity, which is the next layer's input (as an eval message's last block,
net/blocks.py). The header says how to cut it:

    extra["blocks"]        widths, one a block           e.g. [2000, 2000, 500]
    extra["block_layers"]  the 1-based layer of each     e.g. [1, 2, 3]  (the last: the sending layer, always)

A layer keeps the blocks of chosen layers (the one below included, when chosen) and drops the rest, so what travels
is the chosen layers' activity and one more block at most. With features off nothing changes: no blocks, the
activity in its own shape.

>>> act1 = np.ones((2, 3), np.float32)
>>> a, extra = add_layer(np.zeros((2, 4), np.float32), {}, act1, index=1, wanted={1, 2})
>>> a.shape, extra["blocks"], extra["block_layers"]
((2, 3), [3], [1])
>>> a, extra = add_layer(a, extra, np.ones((2, 5), np.float32), index=2, wanted={1, 2})
>>> extra["blocks"], extra["block_layers"]
([3, 5], [1, 2])
>>> published(a, extra, {2})[1:]
([5], [2])
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from ffstream.net import wire
from ffstream.net.blocks import KEY as BLOCKS

LAYERS = "block_layers"  # the header field naming each block's layer, 1-based


def _layout(array: np.ndarray, extra: dict) -> tuple[list[int], list[int]] | None:
    """(widths, layers) when the header describes the array as carried blocks; None otherwise (e.g. frames)."""
    widths, layers = extra.get(BLOCKS), extra.get(LAYERS)
    ints = lambda v: isinstance(v, list) and all(wire.is_int(b) and b >= 1 for b in v)  # noqa: E731
    if not (ints(widths) and ints(layers) and len(widths) == len(layers) and array.ndim == 2 and sum(widths) == array.shape[1]):
        return None
    return widths, layers


def _cut(array: np.ndarray, widths: list[int], keep: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *widths])
    return [array[:, edges[j] : edges[j + 1]] for j in keep]


def add_layer(array: np.ndarray, extra: dict, activity: np.ndarray, index: int,
              wanted: Collection[int]) -> tuple[np.ndarray, dict]:
    """Layer `index`'s learn output for one message: the chosen blocks of its input message (`array`, `extra`), then
    its own normalised activity (B, ...) flattened. Returns the array (B, sum(blocks)) and the new header extra."""
    activity = activity.reshape(len(activity), -1)
    layout = _layout(np.asarray(array), extra)
    parts: list[np.ndarray] = []
    widths: list[int] = []
    layers: list[int] = []
    if layout is not None:
        keep = [j for j, layer in enumerate(layout[1]) if layer in wanted and layer < index]
        parts = _cut(np.asarray(array), layout[0], keep)
        widths, layers = [layout[0][j] for j in keep], [layout[1][j] for j in keep]
    out = np.concatenate([*(p.astype(activity.dtype, copy=False) for p in parts), activity], axis=1) if parts else activity
    return np.ascontiguousarray(out), {**extra, BLOCKS: [*widths, activity.shape[1]], LAYERS: [*layers, index]}


def published(array: np.ndarray, extra: dict, wanted: Collection[int]) -> tuple[np.ndarray, list[int], list[int]] | None:
    """What the sink publishes of a top-layer learn message: the wanted layers' blocks side by side (B, F), their
    widths and their layers; None when the message carries no blocks (features were off in the layers)."""
    layout = _layout(np.asarray(array), extra)
    if layout is None:
        return None
    keep = [j for j, layer in enumerate(layout[1]) if layer in wanted]
    if not keep:
        return None
    parts = _cut(np.asarray(array), layout[0], keep)
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return np.ascontiguousarray(out), [layout[0][j] for j in keep], [layout[1][j] for j in keep]
