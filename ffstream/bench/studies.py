"""The sleep-gap study and the ablations: one learning benchmark per variant, one table, one plot.

    ffstream bench sleep-gap --layers 1000,1000,1000 --epochs 1 --plot docs/sleep_gap.png
    ffstream bench ablations --layers 1000,1000,1000 --epochs 1
"""

from __future__ import annotations

import dataclasses

from ffstream.bench.learning import learning_benchmark
from ffstream.config import RunConfig

SLEEP_EVERY = (1, 10, 100, 1000)


def _row(name: str, cfg: RunConfig, reference: bool = False) -> dict:
    result = learning_benchmark(cfg, reference=reference, pipeline=not reference)
    run = result["reference" if reference else "pipeline"]
    return {"variant": name, "sleep_every": cfg.sleep.sleep_every, "phased": cfg.sleep.phased, **{k: run.get(k) for k in
            ("accuracy_energy", "accuracy_softmax", "accuracy_probe", "staleness", "fps", "wall_s")}}


def sleep_gap(cfg: RunConfig, sleep_every=SLEEP_EVERY, phased: bool = True) -> list[dict]:
    """Accuracy as the snapshot ages: every K in sleep_every, the phased mode, and the interleaved reference."""
    rows = [_row("reference (interleaved)", cfg, reference=True)]
    for k in sleep_every:
        rows.append(_row(f"pipeline, snapshot every {k}", _with(cfg, sleep={"sleep_every": k})))
    if phased:
        rows.append(_row(f"pipeline, phased (source pauses every {cfg.sleep.sleep_every})", _with(cfg, sleep={"phased": True})))
    return rows


def ablations(cfg: RunConfig) -> list[dict]:
    """One change at a time from the default recipe, through the pipeline."""
    return [
        _row("default (random negatives, peer 0.03, Σh²)", cfg),
        _row("hard negatives", _with(cfg, sleep={"negatives": "hard"})),
        _row("no peer normalisation", _with(cfg, model={"peer_weight": 0.0})),
        _row("mean-of-squares goodness (θ = 2)", _with(cfg, model={"goodness": "meansq"})),
    ]


def _with(cfg: RunConfig, **sections: dict) -> RunConfig:
    return dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **changes) for name, changes in sections.items()})


def markdown(rows: list[dict]) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    lines = ["| variant | energy | softmax head | staleness (batches) | frames/s |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        staleness = "0" if r["staleness"] is None else f"{r['staleness']:.1f}"
        lines.append(f"| {r['variant']} | {pct(r['accuracy_energy'])} | {pct(r['accuracy_softmax'])} | {staleness} | {r['fps']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipeline = [r for r in rows if r["variant"].startswith("pipeline, snapshot")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = [r["sleep_every"] for r in pipeline]
    for key, label in (("accuracy_energy", "energy"), ("accuracy_softmax", "softmax head")):
        ax.plot(ks, [100 * r[key] for r in pipeline], marker="o", label=f"pipeline, {label}")
    for r in rows:
        if r["variant"].startswith("reference"):
            ax.axhline(100 * r["accuracy_energy"], color="grey", linestyle="--", label="reference (interleaved), energy")
        if r["phased"]:
            ax.scatter([r["sleep_every"]], [100 * r["accuracy_energy"]], marker="x", color="red", s=60, zorder=3, label="phased, energy")
    ax.set_xscale("log")
    ax.set_xlabel("wake batches between snapshot refreshes (K)")
    ax.set_ylabel("Fashion-MNIST test accuracy (%)")
    ax.set_title("Offline sleep: accuracy as the snapshot ages")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
