"""Saving and loading the sink's softmax head or probe, beside the layer checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save as save_bytes

from ffstream.ff import LinearReadout
from ffstream.ff.checkpoint import CheckpointError, read_safetensors, write_atomic

FORMAT = "ffstream-readout-1"


def readout_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / "readout.safetensors"


def save_readout(directory: str | os.PathLike, readout: LinearReadout, layers: list[int], num_classes: int) -> None:
    tensors = {k: v.detach().contiguous() for k, v in readout.state_dict().items()}
    metadata = {"format": FORMAT, "layers": json.dumps(layers), "num_classes": str(num_classes)}
    write_atomic(readout_path(directory), save_bytes(tensors, metadata=metadata))


def load_readout(directory: str | os.PathLike) -> tuple[LinearReadout, list[int]]:
    """The saved readout and the 0-based layers it reads; CheckpointError when there is none or it is broken."""
    path = readout_path(directory)
    if not path.exists():
        raise CheckpointError(f"no softmax head or probe at {path}; did the run see a labelled stream?")
    tensors, metadata = read_safetensors(path, FORMAT)
    try:
        weight = tensors["linear.weight"]
        readout = LinearReadout(weight.shape[1], weight.shape[0])
        readout.load_state_dict(tensors)
        return readout, json.loads(metadata["layers"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a usable readout: {str(exc).splitlines()[0]}") from None
