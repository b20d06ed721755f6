"""The eval "blocks" payload: how an eval message carries every layer's readout features up to the sink.

An eval message's array is (B, sum(blocks)): the readout features of each layer so far, in order, then the
activity of the last layer, which is the next layer's input. `extra["blocks"]` lists their widths. Each layer reads
the last block and puts its own features and its own activity in its place (only the next layer reads activity;
the sink reads features), so the sink gets every layer's features from one message.
"""

from __future__ import annotations

import numpy as np

from ffstream.net import wire

KEY = "blocks"  # the header field (msg.extra) that lists the widths


def _widths(blocks: object, smallest: int) -> bool:
    return isinstance(blocks, list) and all(wire.is_int(b) and b >= smallest for b in blocks)


def layer_input(array: np.ndarray, blocks: object, in_features: int) -> np.ndarray | None:
    """The last block (B, in_features), this layer's input; None when the blocks do not describe the array so."""
    fits = _widths(blocks, 1) and array.ndim == 2 and sum(blocks) == array.shape[1] and blocks[-1] == in_features
    return array[:, -in_features:] if fits else None


def add_layer(array: np.ndarray, blocks: list[int] | None, features: np.ndarray, activity: np.ndarray,
              dtype: np.dtype) -> tuple[np.ndarray, list[int]]:
    """A layer's eval output: the features carried from below, then its own features (B, F) and activity (B, N).

    `blocks` None: the message came from the source (frames), and nothing is carried.
    """
    blocks = list(blocks or [])
    carried = array[:, : -blocks[-1]] if blocks else np.zeros((len(activity), 0), np.float32)
    out = np.concatenate([carried, features, activity], axis=1).astype(dtype, copy=False)
    return out, blocks[:-1] + [features.shape[1], activity.shape[1]]


def readable(blocks: object, array: np.ndarray, layers: list[int] | tuple[int, ...]) -> bool:
    """Whether the sink can read these 0-based layers' features from an eval message's array."""
    return _widths(blocks, 0) and sum(blocks) == array.shape[1] and max(layers) < len(blocks)


def features(array: np.ndarray, blocks: list[int], layers: list[int] | tuple[int, ...]) -> np.ndarray:
    """The named layers' blocks side by side (B, sum of their widths), as float32."""
    edges = np.cumsum([0] + list(blocks))
    return np.concatenate([array[:, edges[i] : edges[i + 1]] for i in layers], axis=1).astype(np.float32, copy=False)
