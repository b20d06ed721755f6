"""Copies of a layer worker's weights: the snapshot the sleep worker asks for, and the last good state, in memory,
what the last checkpoint holds (or would hold without a checkpoint directory), to roll back to when a step leaves
non-finite weights."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import torch

from ffstream.ff import FFLayer
from ffstream.net import wire

Good = tuple[dict, dict]  # (layer.state_dict(), layer.optimizer.state_dict()), copies


def snapshot_reply(request: wire.Message | None, layer: FFLayer, name: str, index: int, dropped: Counter) -> wire.Message:
    """The answer to a snapshot request: the weights as raw arrays under a header, with their version."""
    if request is None or request.kind != "snapshot_request":
        # REP must answer every request, even a bad one, or the socket locks up.
        dropped["bad_snapshot_request"] += request is not None
        return wire.Message("control", np.zeros(0, np.float32), stream=name, extra={"command": "error"})
    flat, layout = wire.pack_tensors({k: v.cpu().numpy() for k, v in layer.weights().items()})
    return wire.Message("snapshot", flat, stream=name, extra={"version": layer.version, "tensors": layout, "layer": index})


def remember(layer: FFLayer, old: Good | None) -> Good:
    """A copy of the layer's weights and optimiser state, into the previous copy's tensors where shapes match: a fresh
    weight-sized copy every period fragments the heap (RSS creeps up over minutes); an in-place copy reuses it."""
    old = old or (None, None)
    return _copy_into(old[0], layer.state_dict()), _copy_into(old[1], layer.optimizer.state_dict())


def restore(layer: FFLayer, good: Good) -> None:
    weights, optimizer = good
    layer.load_state_dict(weights)
    layer.optimizer.load_state_dict(copy.deepcopy(optimizer))  # a copy: the next roll back needs it unchanged


def _copy_into(old: Any, new: Any) -> Any:
    """A deep copy of `new` (nested dicts and lists of tensors and values) that reuses old's tensors where they fit."""
    if isinstance(new, torch.Tensor):
        if isinstance(old, torch.Tensor) and old.shape == new.shape and old.dtype == new.dtype and old.device == new.device:
            return old.copy_(new)
        return new.detach().clone()
    if isinstance(new, dict):
        return type(new)((k, _copy_into(old.get(k) if isinstance(old, dict) else None, v)) for k, v in new.items())
    if isinstance(new, (list, tuple)):
        olds = old if isinstance(old, (list, tuple)) and len(old) == len(new) else [None] * len(new)
        return type(new)(_copy_into(o, v) for o, v in zip(olds, new))
    return copy.deepcopy(new)
