"""Build any worker from a RunConfig, handing each constructor only the fields it needs."""

from __future__ import annotations

import os
from pathlib import Path

from ffstream.config import ConfigError, RunConfig
from ffstream.ff.stack import readout_layers
from ffstream.sources import Preprocess, open_source
from ffstream.workers.base import Worker
from ffstream.workers.layer import LayerWorker
from ffstream.workers.monitor import MonitorWorker
from ffstream.workers.sink import SinkWorker
from ffstream.workers.sleep import SleepWorker
from ffstream.workers.source import SourceWorker

KINDS = ("source", "layer", "sleep", "sink", "monitor")
SOURCE_POSITION_FILE = "source.json"  # in the checkpoint directory: where a file stream had got to


def compute_workers(cfg: RunConfig) -> int:
    """Processes that do torch work: the layers and the sleep worker."""
    return len(cfg.model.layers) + (1 if cfg.sleep.enabled else 0)


def thread_budget(cfg: RunConfig) -> int:
    """torch threads per worker: the cores shared out, so that processes don't oversubscribe the machine."""
    if cfg.threads:
        return cfg.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // compute_workers(cfg))


def build_worker(kind: str, cfg: RunConfig, index: int | None = None, final_stats_dir: str | None = None) -> Worker:
    if kind not in KINDS:
        raise ConfigError(f"unknown worker kind {kind!r}; expected one of {', '.join(KINDS)}")
    stream, topo = cfg.stream, cfg.topology.filled(len(cfg.model.layers))
    name = f"layer{index}" if kind == "layer" else kind
    common = {
        "metrics_addr": topo.monitor_collect,
        "final_stats_path": str(Path(final_stats_dir) / f"{name}.json") if final_stats_dir else None,
        "health_path": str(Path(cfg.health_dir) / f"{name}.json") if cfg.health_dir else None,
    }
    num_classes = stream.num_classes if stream.supervised else None
    if kind == "source":
        preprocess = Preprocess(size=stream.size, color=stream.color)
        source = open_source(stream.source, preprocess, seed=stream.seed, epochs=stream.epochs)
        return SourceWorker(
            source,
            topo.layer_inputs[0],
            topo.bind(topo.source_publish) if cfg.sleep.enabled else None,
            batch=stream.batch,
            max_frames=stream.max_frames,
            eval_every=stream.eval_every,
            rate_fps=stream.rate_fps,
            phase_length=cfg.sleep.sleep_every if cfg.sleep.enabled and cfg.sleep.phased else None,
            control_addr=topo.bind(topo.source_control),
            labelled=stream.num_classes is not None,
            wait_for_subscribers=1 if cfg.sleep.enabled else 0,
            position_path=str(Path(cfg.checkpoint_dir) / SOURCE_POSITION_FILE) if cfg.checkpoint_dir else None,
            # layer 1's input address names the run: `ffstream run` puts it in a private directory per run
            run_id=topo.layer_inputs[0],
            **common,
        )
    if kind == "layer":
        if index is None or not 1 <= index <= len(cfg.model.layers):
            raise ConfigError(f"--index must be between 1 and {len(cfg.model.layers)} for a layer worker, got {index}")
        return LayerWorker(
            index,
            cfg.layer_configs()[index - 1],
            topo.layer(index),
            num_classes=num_classes if index == 1 else None,
            label_scale=cfg.model.label_scale,
            lr_decay_frames=stream.total_frames if cfg.model.lr_decay else None,
            pair_negatives=cfg.sleep.enabled and cfg.sleep.update == "inputs" and not cfg.sleep.phased,
            negatives_alone=cfg.sleep.enabled and cfg.sleep.phased,
            batching=cfg.model.batching,
            checkpoint_dir=cfg.checkpoint_dir,
            checkpoint_every_s=cfg.checkpoint_every_s,
            device=cfg.device,
            checkpoint_meta={"frame_shape": [3 if stream.color else 1, *stream.size], "task": "supervised" if stream.supervised else "unsupervised"},
            **common,
        )
    if kind == "sleep":
        return SleepWorker(
            topo.source_publish,
            list(topo.layer_snapshots),
            list(topo.layer_negatives),
            cfg.layer_configs(),
            plan=cfg.sleep.plan(stream.supervised),
            num_classes=num_classes,
            label_scale=cfg.model.label_scale,
            head_addr=topo.sink_snapshot,
            source_control_addr=topo.source_control,
            seed=stream.seed,
            **common,
        )
    if kind == "sink":
        return SinkWorker(
            topo.bind(topo.sink_input),
            snapshot_addr=topo.bind(topo.sink_snapshot),
            readout_layers=readout_layers(len(cfg.model.layers), stream.supervised),
            num_classes=stream.num_classes,
            readout_lr=cfg.model.readout_lr,
            scores_path=cfg.scores,
            checkpoint_dir=cfg.checkpoint_dir,
            seed=stream.seed,
            **common,
        )
    return MonitorWorker(topo.bind(topo.monitor_collect), topo.bind(topo.monitor_publish), **common)
