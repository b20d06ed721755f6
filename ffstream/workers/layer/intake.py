"""What a layer worker reads from a message: micro-batches of messages, and their rows as the layer's input."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ffstream.config.plans import Batching
from ffstream.ff import embed_label, neutral_label
from ffstream.net import blocks as eval_blocks
from ffstream.net import wire
from ffstream.net.transport import Receiver


def gather(receiver: Receiver, batching: Batching) -> list[wire.Message]:
    """A micro-batch: the ready message, plus more up to max_rows, waiting at most max_wait_ms; ends at a control or a
    barrier (a barrier is a cut: nothing after it may step with what came before)."""
    first = receiver.recv_ready()
    batch = [first] if first is not None else []
    rows = _rows(first) if first is not None else 0
    deadline = time.monotonic() + batching.max_wait_ms / 1000
    while rows < batching.max_rows and not (batch and batch[-1].kind in ("control", "barrier")):
        wait_ms = max(0.0, (deadline - time.monotonic()) * 1000)
        msg = receiver.recv(int(wait_ms))
        if msg is None:
            if not receiver.sock.poll(0):
                break
            continue
        batch.append(msg)
        rows += _rows(msg) if msg.kind not in ("control", "barrier") else 0
    return batch


def _rows(msg: wire.Message) -> int:
    """Rows of a data message; a 0-d array (wire-valid, useless here) has none and is refused in LabelSlots.inputs."""
    return msg.array.shape[0] if msg.array.ndim else 0


@dataclass(frozen=True)
class LabelSlots:
    """How a layer reads a message's rows: flat (B, D), with the label written in when it is layer 1 of a supervised
    stack (ff/labels.py), neutral on eval copies."""

    in_features: int  # D, the layer's input width
    num_classes: int | None  # label slots written into the input; None: the input is taken as it is
    scale: float  # the value of the label's one-hot slot
    relative: bool  # that value times each frame's RMS (ff/labels.py slot_value)
    device: torch.device  # where the layer's weights are

    def inputs(self, msg: wire.Message, eval_mode: bool, dropped: Counter) -> torch.Tensor | None:
        """The message's rows as the layer's input (B, D); None (and counted in `dropped`) when they do not fit."""
        array, blocks = np.asarray(msg.array), msg.extra.get(eval_blocks.KEY)
        if blocks:
            x = eval_blocks.layer_input(array, blocks, self.in_features)  # eval: the last block is from the layer below
            if x is None:
                dropped["blocks"] += 1
                return None
        else:
            x = array.reshape(len(array), -1) if array.ndim and array.size else array
        if x.ndim != 2 or x.shape[1] != self.in_features or len(x) == 0:
            dropped["input_shape"] += 1
            return None
        x = torch.from_numpy(x.astype(np.float32, copy=False)).to(self.device)
        if not self.num_classes:
            return x
        if eval_mode:
            return neutral_label(x, self.num_classes, self.scale, self.relative)
        if msg.label is None or max(msg.label, default=0) >= self.num_classes:
            dropped["label"] += 1
            return None
        return embed_label(x, torch.tensor(msg.label, device=self.device), self.num_classes, self.scale, self.relative)

    def targets(self, messages: list[wire.Message], dropped: Counter) -> torch.Tensor | None:
        """The messages' labels (B,) as targets (channel-wise competition: every layer learns from them); None (and
        counted) when one has none."""
        if any(m.label is None for m in messages):
            dropped["label"] += len(messages)
            return None
        return torch.tensor([c for m in messages for c in m.label], device=self.device)
