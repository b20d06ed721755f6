"""The cross-field rules of a run's config, each stated once; `RunConfig.check()` applies them all.

Every rule raises a ConfigError whose one line names the key (`model.batch_stats`) and says what to change.
The layer classes keep their own invariants (ValueError from ff/): those guard the maths when a layer is
built by hand; these say it in the config's words before any worker starts. A rule both state is written once,
in ff/ (the lower room: ff.spatial.check_norms, ff.dreamer.check_labelled), and called here with the config's prefix.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ffstream.config.plans import LIVE_MAX_HELD

if TYPE_CHECKING:
    from ffstream.config.sections import ModelConfig, NoveltyConfig, RunConfig, StreamConfig


class ConfigError(ValueError):
    """A bad config value; the message names the key or flag."""


def positive(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def check_stream(s: StreamConfig) -> None:
    positive("stream.batch", s.batch)
    if s.rate_fps is not None and not s.rate_fps > 0:
        raise ConfigError(f"stream.rate_fps must be a positive number of frames/s, got {s.rate_fps!r}")
    positive("stream.epochs", s.epochs)
    if s.max_frames is not None:
        positive("stream.max_frames", s.max_frames)
    if s.task not in (None, "supervised", "unsupervised"):
        raise ConfigError(f"stream.task must be 'supervised' or 'unsupervised', got {s.task!r}")
    if len(s.size) != 2 or min(s.size) <= 0:
        raise ConfigError(f"stream.size must be HxW with positive numbers, got {s.size}")
    if not isinstance(s.barrier_every, int) or isinstance(s.barrier_every, bool) or s.barrier_every < 0:
        raise ConfigError(f"stream.barrier_every must be a whole number of batches, 0 for off, got {s.barrier_every!r}")
    if isinstance(s.barrier_min_s, bool) or not isinstance(s.barrier_min_s, (int, float)) or not 0 <= s.barrier_min_s < float("inf"):
        raise ConfigError(f"stream.barrier_min_s must be a number of seconds >= 0, got {s.barrier_min_s!r}")
    if s.labels is not None and not os.path.isfile(s.labels):
        raise ConfigError(f"stream.labels: no such label file: {s.labels}")


def check_model(m: ModelConfig) -> None:
    """The model section on its own; it also normalises `layers` to one entry per layer ("conv" is three)."""
    from ffstream.ff.spatial_config import check_norms  # ff's torch-free modules: read when a config is checked
    from ffstream.ff.spec import parse_layers

    if not m.layers:
        raise ConfigError("model.layers needs at least one layer, e.g. --set model.layers=500,500,500")
    try:
        specs = parse_layers(m.layers)
    except ValueError as exc:
        raise ConfigError(f"model.layers: {exc}") from None
    m.layers = tuple(s.size if s.kind == "dense" else str(s) for s in specs)
    spatial = [s.kind != "dense" for s in specs]
    if m.batch_norm and not any(spatial):
        raise ConfigError("model.batch_norm standardises conv/local channels: the layers have none")
    if m.competition and not all(spatial):
        raise ConfigError("model.competition needs conv or local layers only (CwComp splits channels into label groups)")
    try:
        check_norms(m.batch_stats, m.batch_norm, m.competition, m.outlier_weight, prefix="model.")  # as each layer checks them
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if m.recurrent and m.label_relative:
        raise ConfigError("model.label_relative writes the label into the frame; the recurrent network takes it at the top (use label_scale)")
    if m.recurrent and any(spatial):
        raise ConfigError("model.recurrent needs dense layers (model.layers=N,N,...); conv and local layers are feed-forward only")
    positive("model.max_batch", m.max_batch)
    positive("model.region", m.region)
    if not isinstance(m.learn_every_rows, int) or m.learn_every_rows < 0:
        raise ConfigError(f"model.learn_every_rows must be a whole number of rows >= 0, got {m.learn_every_rows!r}")
    if not isinstance(m.lr_half_life, int) or m.lr_half_life < 0:
        raise ConfigError(f"model.lr_half_life must be a whole number of frames >= 0 (0: a constant rate), got {m.lr_half_life!r}")
    if not 0 < m.lr_floor <= 1:
        raise ConfigError(f"model.lr_floor is a scale of the learning rate, in (0, 1], got {m.lr_floor!r}")
    if not m.learn_every_ms >= 0:
        raise ConfigError(f"model.learn_every_ms must be >= 0, got {m.learn_every_ms!r}")
    if m.recurrent:
        m.recurrent_config()
    if m.freeze and (m.recurrent or m.batching.scheduled):
        raise ConfigError("model.freeze is for feed-forward stacks without learn_every_rows / learn_every_ms")


def check_novelty(n: NoveltyConfig) -> None:
    positive("novelty.window", n.window)
    positive("novelty.warmup", n.warmup)
    positive("novelty.alert_frames", n.alert_frames)
    if n.warmup > n.window:
        raise ConfigError(f"novelty.warmup {n.warmup} is more frames than novelty.window {n.window} holds")


def check_run(cfg: RunConfig) -> None:
    """Every section, then the rules that join them."""
    from ffstream.ff.negative_kinds import check_labelled  # torch-free, as the checks above
    check_stream(cfg.stream)
    check_model(cfg.model)
    check_novelty(cfg.novelty)
    chosen = cfg.topology.features_layers
    if chosen is not None and (not chosen or any(not 1 <= n <= len(cfg.model.layers) for n in chosen)):
        raise ConfigError(f"topology.features_layers must name layers 1..{len(cfg.model.layers)}, got {','.join(map(str, chosen)) or 'none'}")
    if cfg.sleep.enabled:
        plan = cfg.sleep_plan()
        if plan.route == "chain" and cfg.model.recurrent:
            raise ConfigError("sleep.route 'chain' is for feed-forward stacks; a recurrent run uses 'snapshot'")
        try:
            check_labelled(plan.negatives, labelled=cfg.stream.task != "unsupervised", prefix="sleep.")  # as the Dreamer checks it
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    check_pairs(cfg)
    if cfg.model.batching.scheduled and (cfg.model.recurrent or not cfg.sleep.enabled or cfg.sleep.update != "inputs" or cfg.sleep.phased):
        raise ConfigError("model.learn_every_rows / learn_every_ms need a feed-forward stack with paired negatives "
                          "(sleep on, sleep.update 'inputs', not phased)")
    if cfg.model.learn_every_rows > LIVE_MAX_HELD // 2 * cfg.stream.batch:
        raise ConfigError(f"model.learn_every_rows {cfg.model.learn_every_rows} is more rows than a layer holds "
                          f"({LIVE_MAX_HELD // 2} batches of {cfg.stream.batch})")
    if cfg.model.recurrent and cfg.sleep.enabled and cfg.sleep.update != "inputs":
        raise ConfigError("a recurrent run sends the sleep worker's negatives as inputs; sleep.update must be 'inputs'")
    cfg.layer_configs()  # the layer specs chain from the frame's shape, or one line says why not
    if cfg.model.competition and cfg.sleep.enabled:
        check_competition_sleep(cfg)
    if not (cfg.device == "cpu" or cfg.device == "cuda" or cfg.device.startswith("cuda:")):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {cfg.device!r}")
    positive("restart_budget", cfg.restart_budget)
    if not cfg.restart_window_s > 0 or not cfg.checkpoint_every_s > 0 or not cfg.stall_after_s >= 0:
        raise ConfigError(f"restart_window_s and checkpoint_every_s must be > 0 and stall_after_s >= 0 seconds, got "
                          f"{cfg.restart_window_s!r}, {cfg.checkpoint_every_s!r} and {cfg.stall_after_s!r}")


def check_pairs(cfg: RunConfig) -> None:
    """SCFF's one rule: stream.pairs (layer 1 sees two frames stacked) and paired negatives (sleep.negatives "scff", a
    frame beside an old one, or "temporal", frames out of their time order) go together, since a paired layer needs
    paired negatives and paired negatives need a paired layer."""
    from ffstream.ff.negative_kinds import PAIRED_KINDS
    from ffstream.ff.spec import parse_layers  # torch-free, as the checks above

    pairs = cfg.stream.pairs
    kind = cfg.sleep_plan().negatives
    paired = cfg.sleep.enabled and kind in PAIRED_KINDS
    if paired and not pairs:
        raise ConfigError(f"sleep.negatives {kind!r} pairs frames for a layer that sees two: set stream.pairs=true")
    if not pairs:
        return
    if cfg.sleep.enabled and not paired:
        raise ConfigError(f"stream.pairs needs paired negatives: sleep.negatives 'scff' or 'temporal', not {kind!r}")
    if parse_layers(cfg.model.layers)[0].kind == "dense":
        raise ConfigError("stream.pairs stacks two frames along channels: layer 1 must be conv or local (e.g. model.layers=conv:32x5x5/2,...)")
    if cfg.stream.supervised:
        raise ConfigError("stream.pairs is for unsupervised video: set stream.task=unsupervised (labels then feed the probe only)")
    if cfg.model.recurrent:
        raise ConfigError("stream.pairs needs a feed-forward stack; model.recurrent takes one frame a step")


def check_competition_sleep(cfg: RunConfig) -> None:
    """CwComp learns from hybrids only in the layers that see the whole frame (spec.Field): one must, and
    no layer below passes them up."""
    if cfg.sleep_plan().negatives != "hybrid":
        raise ConfigError("model.competition (CwComp) takes labels as targets, not in the frame, so a wrong label makes no negative: "
                          "use the sleep worker's hybrids (sleep.negatives=hybrid) or none (sleep.enabled=false)")
    if cfg.sleep.route == "chain":
        raise ConfigError("model.competition: only the layers that see the whole frame take hybrids, so none can be passed up "
                          "from layer 1: use sleep.route=snapshot")
    if cfg.model.outlier_weight > 0 and not any(c.takes_negatives for c in cfg.layer_configs()):
        raise ConfigError("model.competition: the sleep worker's hybrids teach only a layer that sees the whole frame, and none of "
                          "these does (add a layer, a stride or a +pool), or turn the sleep worker off (sleep.enabled=false)")
