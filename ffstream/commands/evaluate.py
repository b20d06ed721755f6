"""`ffstream eval`: accuracy of a checkpoint directory on a labelled split."""

from __future__ import annotations

import json

import torch

from ffstream.config import recorded
from ffstream.ff.checkpoint import CheckpointError, checkpoint_config, layer_path
from ffstream.offline.evaluate import evaluate
from ffstream.offline.score import trained_preprocessing
from ffstream.sources import Preprocess, dataset_arrays


def eval_command(args) -> int:
    torch.set_num_threads(torch.get_num_threads())
    if not layer_path(args.checkpoint_dir, 1).exists():
        raise CheckpointError(f"no layer checkpoints (layer1.safetensors, ...) in {args.checkpoint_dir}")
    run = recorded(args.checkpoint_dir)  # the run.json `ffstream run` wrote beside the checkpoints, if any
    if args.source is None:
        args.source = test_split(run.stream.source if run else None, args.checkpoint_dir)
    _, meta = checkpoint_config(layer_path(args.checkpoint_dir, 1))  # layer 1's metadata: the frame shape (any stack kind)
    channels, height, width = meta.get("frame_shape") or (1, 28, 28)
    center, pairs = trained_preprocessing(args.checkpoint_dir, meta)  # an SCFF stack: frames centred, each beside itself
    preprocess = Preprocess(size=(height, width), color=channels == 3, center=center, self_pair=pairs)
    images, labels = dataset_arrays(args.source, preprocess, labels=args.labels)
    result = evaluate(args.checkpoint_dir, images, labels)
    if args.json:
        print(json.dumps(result))
        return 0
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    print(f"{result['n']} frames of {args.source}, layers {result['layers']} ({result['task']})")
    print(f"  accuracy by energy:       {fmt(result['accuracy_energy'])} (layers 2..L)")
    if result.get("accuracy_energy_all_layers") is not None:
        print(f"                            {fmt(result['accuracy_energy_all_layers'])} (all layers)")
        print(f"                            {fmt(result.get('accuracy_energy_last_layer'))} (the last layer)")
    print(f"  accuracy by softmax head: {fmt(result['accuracy_softmax'])}")
    if result.get("hybrid_auroc") is not None:
        print(f"  real frames over hybrids: {result['hybrid_auroc']:.4f} (AUROC of the last layer's top class probability; 0.5: chance)")
    if result.get("readout_error"):
        print(f"  ({result['readout_error']})")
    return 0


def test_split(source: str | None, checkpoint_dir: str) -> str:
    """The labelled source to score a run on when --source is not given: the test split of the dataset it learned from."""
    if source is None:
        raise CheckpointError(f"--source is needed: {checkpoint_dir} has no run.json saying what the stack learned from")
    if source == "fashion-mnist" or source.startswith("fashion-mnist:"):
        return "fashion-mnist:test"
    if source.startswith("idx:"):
        directory, sep, split = source[len("idx:"):].rpartition(":")
        return f"idx:{directory if sep and split in ('train', 'test') else source[len('idx:'):]}:test"
    if source == "synthetic" or source.startswith("synthetic:"):
        return source  # generated: the same clip, the only labelled copy there is
    raise CheckpointError(f"--source is needed: the stack learned from {source!r}, which has no labelled test split")
