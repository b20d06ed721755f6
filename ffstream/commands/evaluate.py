"""`ffstream eval`: accuracy of a checkpoint directory on a labelled split. The work is `ffstream.evaluate` (offline/api.py)."""

from __future__ import annotations

import json


def eval_command(args) -> int:
    from ffstream.offline import api

    result = api.evaluate(args.checkpoint_dir, args.source, labels=args.labels)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "source"}))
        return 0
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    print(f"{result['n']} frames of {result['source']}, layers {result['layers']} ({result['task']})")
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
