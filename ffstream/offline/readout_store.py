"""Saving and loading the sink's softmax head or probe, beside the layer checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ffstream.ff import LinearReadout
from ffstream.ff.checkpoint import CheckpointError, read_safetensors, write_atomic
from ffstream.ff.readout import MOMENTS_PREFIX

FORMAT = "ffstream-readout-1"


def readout_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / "readout.safetensors"


def save_readout(directory: str | os.PathLike, readout: LinearReadout, layers: list[int], num_classes: int,
                 probe_state: dict[str, torch.Tensor] | None = None) -> None:
    """probe_state: an online probe's feature statistics and reservoir (workers/online_probe.py), saved beside the head
    that folds the statistics in, and the head's optimiser state (LinearReadout.moments)."""
    tensors = {k: v.detach().contiguous() for k, v in {**readout.state_dict(), **(probe_state or {})}.items()}
    metadata = {"format": FORMAT, "layers": json.dumps(layers), "num_classes": str(num_classes)}
    write_atomic(readout_path(directory), tensors, metadata)


def load_readout(directory: str | os.PathLike, with_probe_state: bool = False) -> tuple:
    """The saved readout and the 0-based layers it reads (and with_probe_state: the online probe's statistics,
    reservoir and optimiser state saved beside it, or None); CheckpointError when there is none or it is broken."""
    path = readout_path(directory)
    if not path.exists():
        raise CheckpointError(f"no softmax head or probe at {path}; did the run see a labelled stream?")
    tensors, metadata = read_safetensors(path, FORMAT)
    try:
        weight = tensors["linear.weight"]
        readout = LinearReadout(weight.shape[1], weight.shape[0])
        readout.load_state_dict({k: v for k, v in tensors.items() if k.startswith("linear.")})
        probe_state = {k: v for k, v in tensors.items() if k.startswith(("scaler.", "replay.", MOMENTS_PREFIX))} or None
        layers = json.loads(metadata["layers"])
        return (readout, layers, probe_state) if with_probe_state else (readout, layers)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a usable readout: {str(exc).splitlines()[0]}") from None
