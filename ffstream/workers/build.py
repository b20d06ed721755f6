"""Build any worker from a RunConfig, handing each constructor only the fields it needs.

Each kind's module is imported when that kind is built: the source and monitor workers need no torch, and a
process that imports none starts about a second sooner (a restarted worker is back that much earlier).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ffstream.config import ConfigError, RunConfig
from ffstream.ff.recurrent_config import INTERLEAVED_BATCHES
from ffstream.sources import is_live  # the package alone: the sources themselves (cv2, PyAV) load when named
from ffstream.workers.base import Worker

KINDS = ("source", "layer", "sleep", "sink", "monitor")
TORCH_KINDS = ("layer", "sleep", "sink")  # the kinds that import torch (source and monitor: none)
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
        from ffstream.sources import Preprocess, open_source  # cv2 and PyAV (0.15-0.3 s): imported by the source alone
        from ffstream.workers.source import SourceWorker

        preprocess = Preprocess(size=stream.size, color=stream.color, center=stream.center)
        source = open_source(stream.source, preprocess, seed=stream.seed, epochs=stream.epochs, labels=stream.labels)
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
            iterations=cfg.steps_per_batch,
            eval_steps=cfg.model.window[1] if cfg.steps_per_batch > 1 else None,
            interleave=INTERLEAVED_BATCHES,  # used only with more than one step per batch
            barrier_every=stream.barrier_every,
            barrier_min_s=stream.barrier_min_s,  # exactly-once: the source turns it off for live streams and without position_path
            pairs=stream.pairs,
            **common,
        )
    if kind == "layer":
        from ffstream.workers.layer import LayerWorker, choose
        from ffstream.workers.layer.recurrent import RecurrentLayerWorker

        if index is None or not 1 <= index <= len(cfg.model.layers):
            raise ConfigError(f"--index must be between 1 and {len(cfg.model.layers)} for a layer worker, got {index}")
        layer_kwargs = {}
        if cfg.model.recurrent:
            layer_kwargs = _recurrent_layer(cfg, index, topo, num_classes)
        else:
            # Layer 1 writes the label into the frame; under channel-wise competition every layer takes it as a target instead.
            layer_kwargs = {"num_classes": num_classes if index == 1 and not cfg.model.competition else None}
        endpoints = topo.layer(index)
        layer_cfg = cfg.layer_configs()[index - 1]
        takes_negatives = cfg.sleep.enabled and layer_cfg.takes_negatives
        if cfg.sleep.enabled and cfg.sleep.route == "chain" and index < len(cfg.model.layers):
            endpoints = dataclasses.replace(endpoints, negative_output=topo.layer_negatives[index])  # layer index+1's, connect form
        return (RecurrentLayerWorker if cfg.model.recurrent else LayerWorker)(
            index,
            layer_cfg,
            endpoints,
            **layer_kwargs,
            label_scale=cfg.model.label_scale,
            label_relative=cfg.model.label_relative,
            lr_schedule=cfg.rate_schedule(),
            # when the layer steps, and on which negatives: chosen here, once (workers/layer/policies.py)
            policy=choose(cfg.model.batching, paired=takes_negatives and cfg.sleep.update == "inputs" and not cfg.sleep.phased,
                          phased=takes_negatives and cfg.sleep.phased, frozen=cfg.model.freeze),
            batching=cfg.model.batching,
            checkpoint_dir=cfg.checkpoint_dir,
            checkpoint_every_s=cfg.checkpoint_every_s,
            device=cfg.device,
            wire_dtype="float16" if cfg.model.wire_float16 else "float32",
            # frame_shape is a frame's, as the source reads it; offline readers centre and self-pair frames as center and pairs say
            checkpoint_meta={"frame_shape": [3 if stream.color else 1, *stream.size], "task": "supervised" if stream.supervised else "unsupervised",
                             "center": stream.center, "pairs": stream.pairs,
                             **({"recurrent": _recurrent_meta(cfg, num_classes)} if cfg.model.recurrent else {}),
                             **({"num_classes": num_classes} if cfg.model.competition else {})},
            preview_shape=(3 if stream.color else 1, *stream.size) if index == 1 else None,
            features_layers=features_layers(cfg),
            rewind_addr=topo.source_control,  # a gap reported at once (exactly-once), connect form
            **common,
        )
    if kind == "sleep":
        if cfg.model.recurrent:
            from ffstream.workers.recurrent_sleep import RecurrentSleepWorker

            return RecurrentSleepWorker(
                topo.source_publish,
                list(topo.layer_snapshots),
                list(topo.layer_negatives),
                cfg.layer_configs(),
                recurrent=cfg.model.recurrent_config(),
                static_images=cfg.steps_per_batch > 1,
                plan=cfg.sleep_plan(),
                num_classes=num_classes,
                label_scale=cfg.model.label_scale,
                source_control_addr=topo.source_control,
                seed=stream.seed,
                **common,
            )
        from ffstream.workers.sleep import SleepWorker

        return SleepWorker(
            topo.source_publish,
            list(topo.layer_snapshots),
            list(topo.layer_negatives),
            cfg.layer_configs(),
            plan=cfg.sleep_plan(),
            num_classes=num_classes,
            label_scale=cfg.model.label_scale,
            label_relative=cfg.model.label_relative,
            head_addr=topo.sink_snapshot,
            source_control_addr=topo.source_control,
            seed=stream.seed,
            **common,
        )
    if kind == "sink":
        from ffstream.ff.stack import readout_layers
        from ffstream.monitor.novelty import NoveltyMeter
        from ffstream.workers.sink import FEATURES_WAIT_MS, SinkWorker

        return SinkWorker(
            topo.bind(topo.sink_input),
            snapshot_addr=topo.bind(topo.sink_snapshot),
            readout_layers=readout_layers(len(cfg.model.layers), stream.supervised),
            num_classes=stream.num_classes,
            readout_lr=cfg.model.readout_lr,
            online_probe=not stream.supervised,  # a probe of unsupervised layers: standardised features, replay (online_probe.py)
            scores_path=cfg.scores,
            features_addr=topo.bind(topo.features) if topo.features else None,
            features_layers=features_layers(cfg),
            features_wait_ms=None if not is_live(stream.source) else FEATURES_WAIT_MS,  # a file waits for its consumer; a camera does not
            novelty=NoveltyMeter(cfg.novelty.window, cfg.novelty.warmup, cfg.novelty.threshold, cfg.novelty.alert_frames, cfg.model.variant),
            alert_events=cfg.novelty.events,
            on_alert=cfg.novelty.on_alert,
            checkpoint_dir=cfg.checkpoint_dir,
            frozen=cfg.model.freeze,
            checkpoint_every_s=cfg.checkpoint_every_s,
            seed=stream.seed,
            eval_step=cfg.model.window[1] - 1 if cfg.steps_per_batch > 1 else None,
            ack_addr=topo.source_control,  # barrier acknowledgements (exactly-once), connect form
            **common,
        )
    from ffstream.workers.monitor import MonitorWorker

    http = topo.bind(topo.monitor_http) if topo.monitor_http else None
    return MonitorWorker(topo.bind(topo.monitor_collect), topo.bind(topo.monitor_publish), http, http_token=cfg.security.http_token,
                         **common)


def features_layers(cfg: RunConfig) -> tuple[int, ...] | None:
    """The 1-based layers whose activity the sink publishes (topology.features); None when features are off."""
    if not cfg.topology.features:
        return None
    return tuple(cfg.topology.features_layers or range(1, len(cfg.model.layers) + 1))


def _recurrent_layer(cfg: RunConfig, index: int, topo, num_classes: int | None) -> dict:
    """What a recurrent layer worker needs beyond a plain one: its top-down width and feedback sockets."""
    widths = [c.width for c in cfg.layer_configs()]  # layers may be given as specs ("dense:500"); recurrent ones are all dense
    top = index == len(widths)
    return {
        "top_down_features": (num_classes or 0) if top else widths[index],
        "label_classes": num_classes if top else None,
        "feedback_input": None if top else topo.bind(topo.layer_feedbacks[index - 1]),
        "feedback_output": topo.layer_feedbacks[index - 2] if index > 1 else None,
        "iterations": cfg.steps_per_batch,
        "damping": cfg.model.recurrent_config().damping,
    }


def _recurrent_meta(cfg: RunConfig, num_classes: int | None) -> dict:
    """What a recurrent checkpoint needs to be rebuilt and scored (ffstream.offline.evaluate)."""
    r = cfg.model.recurrent_config()
    return {"label_classes": num_classes, "iterations": r.iterations, "window": list(r.window), "damping": r.damping}
