"""Run configuration: one small dataclass per concept, built from file, environment and CLI in one place.

Precedence, lowest first: dataclass defaults < JSON config file (`--config`) <
`FFSTREAM_<SECTION>_<FIELD>` environment variables < command-line flags.
Each worker is handed only the fields it needs (see ffstream.workers.build).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffstream.config.plans import LIVE_MAX_HELD, Batching, LayerEndpoints, SleepPlan
from ffstream.ff import LayerConfig
from ffstream.ff.recurrent import RecurrentConfig
from ffstream.ff.spec import build_configs, parse_layers

DEFAULT_MONITOR = "tcp://127.0.0.1:5570"
DEFAULT_MONITOR_HTTP = "http://127.0.0.1:5572"
DEFAULT_LR = 1e-3  # the layers' learning rate
# A recurrent run on images makes `iterations` layer steps per image (8 by default). At one epoch of 2x500 on
# Fashion-MNIST, 2.5e-4 instead of 1e-3 kept the energy (83.50 against 83.00 %) and raised the head from 65.27 to
# 80.15 % and the probe from 76.29 to 84.47 % (BENCHMARKS.md, "Recurrent top-down").
RECURRENT_IMAGE_LR = 2.5e-4


class ConfigError(ValueError):
    """A bad config value; the message names the key or flag."""


@dataclass
class StreamConfig:
    source: str = "synthetic"  # source spec: synthetic[:N], FILE, webcam:N, rtsp://..., idx:DIR[:split], fashion-mnist[:split]
    size: tuple[int, int] = (28, 28)  # frame (height, width) after resizing, pixels
    color: bool = False  # False: grey, one channel; True: RGB
    batch: int = 64  # frames per message from the source
    max_frames: int | None = None  # stop after this many frames; None runs the source to its end
    epochs: int = 1  # passes over a file or dataset
    task: str | None = None  # "supervised" or "unsupervised"; None: supervised when the source has labels
    num_classes: int | None = None  # labels in the stream; filled in from the source by the runner
    total_frames: int | None = None  # frames the stream will deliver, when known; filled in by the runner
    eval_every: int = 1  # labelled streams: a forward-only neutral-label copy of every n-th batch, for accuracy; 0 never
    seed: int = 0  # seeds weights, shuffling and negatives
    rate_fps: float | None = None  # pace the source to this many frames/s, a simulated live camera; None: as fast as it can
    labels: str | None = None  # a video file's per-frame label CSV (frame,label); None: the same-stem .csv beside it, if any

    def check(self) -> None:
        positive("stream.batch", self.batch)
        if self.rate_fps is not None and not self.rate_fps > 0:
            raise ConfigError(f"stream.rate_fps must be a positive number of frames/s, got {self.rate_fps!r}")
        positive("stream.epochs", self.epochs)
        if self.max_frames is not None:
            positive("stream.max_frames", self.max_frames)
        if self.task not in (None, "supervised", "unsupervised"):
            raise ConfigError(f"stream.task must be 'supervised' or 'unsupervised', got {self.task!r}")
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ConfigError(f"stream.size must be HxW with positive numbers, got {self.size}")
        if self.labels is not None and not os.path.isfile(self.labels):
            raise ConfigError(f"stream.labels: no such label file: {self.labels}")

    @property
    def supervised(self) -> bool:
        return self.task == "supervised"

    @property
    def input_size(self) -> int:
        return (3 if self.color else 1) * self.size[0] * self.size[1]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a frame as the source sends it."""
        return (3 if self.color else 1, *self.size)


@dataclass
class ModelConfig:
    layers: tuple[int | str, ...] = (500, 500, 500)  # bottom up: units (dense) or specs, e.g. ("conv:32x3x3", "conv:64x3x3/2", "dense:1000")
    goodness: str = "sumsq"  # "sumsq" or "meansq"
    variant: str = "max"  # "max" or "min"
    threshold: float | None = None  # None: the width (sumsq) or 2.0 (meansq)
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float | None = None  # per optimiser step; None: RunConfig.layer_lr picks DEFAULT_LR or RECURRENT_IMAGE_LR
    momentum: float = 0.9  # SGD momentum / Adam beta1
    weight_decay: float = 0.0  # per step
    peer_weight: float = 0.03  # peer normalisation λ; 0 is off
    label_scale: float = 4.0  # value of the one-hot label slot written into the frame (pixels are 0..1)
    label_relative: bool = False  # the slot value is label_scale × the frame's RMS, so the label weighs the same in every frame
    lr_decay: bool = True  # decay the layers' learning rate linearly over a stream of known length
    readout_lr: float = 3e-3  # the sink's softmax head / probe, Adam
    max_batch: int = 64  # micro-batch rows per layer update
    max_wait_ms: float = 0.0  # how long a layer waits to fill a micro-batch
    forward_first: bool = False  # live video: layers forward queued frames first, then learn on them in merged steps (latency over steps/frame)
    # Live video, learning decoupled from arrival (needs paired negatives): each frame is forwarded at once and its rows
    # held (at most 128 messages, with their negatives; nothing else is stored) until a step on all ready rows, taken
    # once learn_every_rows are ready or learn_every_ms after the last step. 0 and 0 (default): a step per micro-batch.
    learn_every_rows: int = 0  # rows per scheduled step; 0: no row trigger
    learn_every_ms: float = 0.0  # ms after the last step at which whatever rows are ready step; 0: no time trigger
    wire_float16: bool = False  # send activity (and chained negatives) between workers as float16, half the bytes; layers compute in float32
    recurrent: bool = False  # the paper's recurrent network: each layer also hears the layer above, one step late
    iterations: int = 8  # recurrent, image datasets: steps per image (video: consecutive frames are the steps)
    window: tuple[int, int] = (3, 5)  # recurrent, image datasets: 1-based steps whose goodness/activity classify
    competition: bool = False  # CwComp: conv/local channels split into one group per class, softmax over groups; hybrid negatives optional
    region: int = 1  # conv/local: goodness pooled over region x region output locations, each region its own loss
    batch_norm: bool = False  # conv/local: each channel standardised by running statistics, then ReLU, before the per-location RMS
    batch_stats: bool = False  # conv/local with competition: CwComp's batch norm, channels standardised by the learning batch, goodness read after
    # competition with the sleep worker: a hybrid's loss (its class scores pulled toward uniform: none of the classes) against a positive's,
    # in the layers that see the whole frame. Through the pipeline, 4 layers, 5 epochs: 0.005 read as the sleep worker off (91.41 / 91.42 %
    # by energy) and told real frames from hybrids better (AUROC 0.928 / 0.859); 0.02 cost 0.3 points (BENCHMARKS.md)
    outlier_weight: float = 0.005

    def recurrent_config(self) -> RecurrentConfig:
        try:
            return RecurrentConfig(iterations=self.iterations, window=tuple(self.window))
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None

    def check(self) -> None:
        if not self.layers:
            raise ConfigError("model.layers needs at least one layer, e.g. --layers 500,500,500")
        try:
            specs = parse_layers(self.layers)
        except ValueError as exc:
            raise ConfigError(f"model.layers (--layers): {exc}") from None
        self.layers = tuple(s.size if s.kind == "dense" else str(s) for s in specs)  # one entry per layer ("conv" is three)
        if self.batch_norm and all(s.kind == "dense" for s in specs):
            raise ConfigError("model.batch_norm (--batch-norm) standardises conv/local channels: the layers have none")
        if self.competition and any(s.kind == "dense" for s in specs):
            raise ConfigError("model.competition needs conv or local layers only (CwComp splits channels into label groups)")
        if self.batch_stats and not self.competition:
            raise ConfigError("model.batch_stats (--batch-stats) reads CwComp's class scores on batch-standardised channels: it needs --competition")
        if self.batch_stats and self.batch_norm:
            raise ConfigError("model.batch_stats and model.batch_norm are two kinds of batch norm: choose one")
        if self.recurrent and self.label_relative:
            raise ConfigError("model.label_relative writes the label into the frame; the recurrent network takes it at the top (use label_scale)")
        if self.recurrent and any(s.kind != "dense" for s in specs):
            raise ConfigError("model.recurrent needs dense layers (--layers N,N,...); conv and local layers are feed-forward only")
        positive("model.max_batch", self.max_batch)
        positive("model.region", self.region)
        if not (isinstance(self.outlier_weight, (int, float)) and self.outlier_weight >= 0):
            raise ConfigError(f"model.outlier_weight must be a number >= 0, got {self.outlier_weight!r}")
        if not isinstance(self.learn_every_rows, int) or self.learn_every_rows < 0:
            raise ConfigError(f"model.learn_every_rows must be a whole number of rows >= 0, got {self.learn_every_rows!r}")
        if not self.learn_every_ms >= 0:
            raise ConfigError(f"model.learn_every_ms must be >= 0, got {self.learn_every_ms!r}")
        if self.recurrent:
            self.recurrent_config()

    def layer_configs(self, input_shape: tuple[int, int, int], seed: int, num_classes: int | None, lr: float) -> list[LayerConfig]:
        """input_shape: (C, H, W) of a frame; num_classes: the label groups of channel-wise competition; lr: the layers' rate."""
        competition = (num_classes or 0) if self.competition else 0  # the labels' classes are known once the source is
        try:
            return build_configs(
                parse_layers(self.layers), input_shape, seed,
                competition=competition,
                region=self.region,
                batch_norm=self.batch_norm,
                batch_stats=self.batch_stats and competition > 0,
                outlier_weight=self.outlier_weight if competition else 0.0,
                goodness=self.goodness,
                variant=self.variant,
                threshold=self.threshold,
                optimizer=self.optimizer,
                lr=lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                peer_weight=self.peer_weight,
            )
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None

    @property
    def batching(self) -> Batching:
        return Batching(max_rows=self.max_batch, max_wait_ms=self.max_wait_ms, forward_first=self.forward_first,
                        learn_every_rows=self.learn_every_rows, learn_every_ms=float(self.learn_every_ms))


@dataclass
class SleepConfig:
    enabled: bool = True  # run the sleep worker at all; without it there are no negatives
    negatives: str | None = None  # "random", "hard" or "hybrid"; None: random when supervised, hybrid otherwise
    sleep_every: int = 10  # wake batches between snapshot refreshes, as the layers step them (a recurrent image: one per iteration)
    reservoir: int = 4096  # raw frames kept for negatives
    update: str = "inputs"  # what layers are sent: "inputs" (judged on current weights) or "gradient" (taken on the snapshot)
    phased: bool = False  # sleep in phases: the source pauses after every sleep_every batches while the negatives run
    route: str = "snapshot"  # "snapshot": negatives for every layer made here on snapshots; "chain": layer 1's only, each layer passes its own up

    def plan(self, supervised: bool) -> SleepPlan:
        kind = self.negatives or ("random" if supervised else "hybrid")
        try:
            return SleepPlan(negatives=kind, sleep_every=self.sleep_every, reservoir=self.reservoir, update=self.update, phased=self.phased,
                             route=self.route)
        except ValueError as exc:
            raise ConfigError(f"sleep: {exc}") from None


@dataclass
class Topology:
    """Where every socket lives. Stable sides bind: each layer its inputs, the sink, the source's publisher, the monitor."""

    source_publish: str = "tcp://127.0.0.1:5560"  # source XPUB of raw frames for the sleep worker
    source_control: str = "tcp://127.0.0.1:5561"  # source PULL: the sleep worker's "resume" in phased mode
    layer_inputs: tuple[str, ...] = ()  # per layer, PULL of frames/activity
    layer_negatives: tuple[str, ...] = ()  # per layer, PULL of negative updates
    layer_snapshots: tuple[str, ...] = ()  # per layer, REP for snapshots
    layer_feedbacks: tuple[str, ...] = ()  # per layer, PULL of top-down feedback from the layer above (recurrent runs)
    sink_input: str = "tcp://127.0.0.1:5590"  # sink PULL
    sink_snapshot: str = "tcp://127.0.0.1:5592"  # sink REP: the softmax head's weights, for hard negatives
    monitor_collect: str = "tcp://127.0.0.1:5571"  # monitor XSUB, workers publish metrics here
    monitor_publish: str = DEFAULT_MONITOR  # monitor XPUB, clients subscribe here
    monitor_http: str | None = DEFAULT_MONITOR_HTTP  # the monitor's web dashboard and Prometheus /metrics; port 0: any free port; None: off
    bind_host: str | None = None  # binding sides bind tcp on this host instead of the address's ("*" in containers); None binds as written

    def bind(self, addr: str) -> str:
        """The address a binding side binds: tcp://layer1:5710 -> tcp://*:5710 when bind_host is "*" (http:// alike); ipc/inproc as written."""
        scheme = addr.split("://", 1)[0]
        if not self.bind_host or scheme not in ("tcp", "http"):
            return addr
        return f"{scheme}://{self.bind_host}:{addr.rsplit(':', 1)[1]}"

    def layer(self, index: int) -> LayerEndpoints:
        """Endpoints of layer `index` (1-based): the three it binds in bind form, the output it connects as written."""
        i = index - 1
        output = self.layer_inputs[i + 1] if index < len(self.layer_inputs) else self.sink_input
        return LayerEndpoints(self.bind(self.layer_inputs[i]), output, self.bind(self.layer_negatives[i]), self.bind(self.layer_snapshots[i]))

    def filled(self, num_layers: int, host: str = "127.0.0.1", base_port: int = 5600) -> "Topology":
        """Missing per-layer addresses on tcp ports base_port + 10·i + {0, 1, 2}."""
        def ports(offset: int, given: tuple[str, ...]) -> tuple[str, ...]:
            return given or tuple(f"tcp://{host}:{base_port + 10 * i + offset}" for i in range(num_layers))
        return dataclasses.replace(
            self, layer_inputs=ports(0, self.layer_inputs), layer_negatives=ports(1, self.layer_negatives), layer_snapshots=ports(2, self.layer_snapshots),
            layer_feedbacks=ports(3, self.layer_feedbacks),
        )

    @classmethod
    def local(cls, num_layers: int, monitor_publish: str, run_dir: str | None = None, monitor_http: str | None = None) -> "Topology":
        """ipc:// sockets in a private directory for a one-machine run; only the monitor is on tcp (and HTTP, if given)."""
        run_dir = run_dir or tempfile.mkdtemp(prefix="ffs-")
        ipc = lambda name: f"ipc://{run_dir}/{name}"  # noqa: E731
        return cls(
            source_publish=ipc("source.pub"),
            source_control=ipc("source.ctl"),
            layer_inputs=tuple(ipc(f"layer{i}.in") for i in range(1, num_layers + 1)),
            layer_negatives=tuple(ipc(f"layer{i}.neg") for i in range(1, num_layers + 1)),
            layer_snapshots=tuple(ipc(f"layer{i}.snap") for i in range(1, num_layers + 1)),
            layer_feedbacks=tuple(ipc(f"layer{i}.fb") for i in range(1, num_layers + 1)),
            sink_input=ipc("sink.in"),
            sink_snapshot=ipc("sink.snap"),
            monitor_collect=ipc("monitor.in"),
            monitor_publish=monitor_publish,
            monitor_http=monitor_http,
        )


@dataclass
class SecurityConfig:
    """CURVE between hosts (ffstream.net.security). Off unless curve_dir is set; never on loopback or ipc addresses."""

    curve_dir: str | None = None  # keys from `ffstream keys generate DIR`; None: no CURVE
    curve_client: str = "worker"  # this process's client key pair, DIR/<name>.key_secret


@dataclass
class RunConfig:
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sleep: SleepConfig = field(default_factory=SleepConfig)
    topology: Topology = field(default_factory=Topology)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    checkpoint_dir: str | None = None  # layer checkpoints and the readout; None keeps nothing
    checkpoint_every_s: float = 60.0  # seconds between periodic checkpoints
    scores: str | None = None  # JSONL of per-frame goodness, written by the sink
    device: str = "cpu"  # torch device of the layer workers: cpu, cuda, cuda:N
    threads: int | None = None  # torch threads per worker; None: cores shared among the compute workers
    health_dir: str | None = None  # each worker's heartbeat <name>.json for `ffstream check`; None writes none

    def check(self) -> None:
        self.stream.check()
        self.model.check()
        if self.sleep.enabled:
            plan = self.sleep_plan()
            if plan.route == "chain" and self.model.recurrent:
                raise ConfigError("sleep.route 'chain' is for feed-forward stacks; a recurrent run uses 'snapshot'")
            if plan.negatives != "hybrid" and self.stream.task == "unsupervised":
                raise ConfigError(f"sleep.negatives {plan.negatives!r} needs labels; an unsupervised run uses 'hybrid'")
        if self.model.batching.scheduled and (self.model.recurrent or not self.sleep.enabled or self.sleep.update != "inputs" or self.sleep.phased):
            raise ConfigError("model.learn_every_rows / learn_every_ms need a feed-forward stack with paired negatives "
                              "(sleep on, sleep.update 'inputs', not phased)")
        if self.model.learn_every_rows > LIVE_MAX_HELD // 2 * self.stream.batch:
            raise ConfigError(f"model.learn_every_rows {self.model.learn_every_rows} is more rows than a layer holds "
                              f"({LIVE_MAX_HELD // 2} batches of {self.stream.batch})")
        if self.model.recurrent and self.sleep.enabled and self.sleep.update != "inputs":
            raise ConfigError("a recurrent run sends the sleep worker's negatives as inputs; sleep.update must be 'inputs'")
        self.layer_configs()  # the layer specs chain from the frame's shape, or one line says why not
        if self.model.competition and self.sleep.enabled:
            self._check_competition_sleep()
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def _check_competition_sleep(self) -> None:
        """CwComp learns from hybrids only in the layers that see the whole frame (spec.Field): one must, and
        no layer below passes them up."""
        if self.sleep_plan().negatives != "hybrid":
            raise ConfigError("model.competition (CwComp) takes labels as targets, not in the frame, so a wrong label makes no negative: "
                              "use the sleep worker's hybrids (--negatives hybrid) or none (--no-sleep)")
        if self.sleep.route == "chain":
            raise ConfigError("model.competition: only the layers that see the whole frame take hybrids, so none can be passed up "
                              "from layer 1: use sleep.route 'snapshot' (--sleep-route snapshot)")
        if self.model.outlier_weight > 0 and not any(c.takes_negatives for c in self.layer_configs()):
            raise ConfigError("model.competition: the sleep worker's hybrids teach only a layer that sees the whole frame, and none of "
                              "these does (add a layer, a stride or a +pool), or turn the sleep worker off (--no-sleep)")

    def sleep_plan(self) -> SleepPlan:
        """The sleep worker's plan. Wrong-label negatives by default where labels are written into the frames;
        channel-wise competition has its labels as targets, so its default is hybrids."""
        return self.sleep.plan(self.stream.supervised and not self.model.competition)

    def layer_configs(self) -> list[LayerConfig]:
        return self.model.layer_configs(self.stream.frame_shape, self.stream.seed, self.stream.num_classes, self.layer_lr)

    @property
    def layer_lr(self) -> float:
        """The layers' learning rate: `model.lr` if given, else RECURRENT_IMAGE_LR where each image makes several
        layer steps (a recurrent run on images), else DEFAULT_LR."""
        if self.model.lr is not None:
            return self.model.lr
        return RECURRENT_IMAGE_LR if self.steps_per_batch > 1 else DEFAULT_LR

    @property
    def static_images(self) -> bool:
        """An image dataset, whose every image a recurrent run repeats for `model.iterations` steps (video: one step a frame)."""
        return self.stream.source.startswith(("fashion-mnist", "idx:"))

    @property
    def steps_per_batch(self) -> int:
        """How many times the source sends each batch: the iterations of a recurrent run on images, else once."""
        return self.model.iterations if self.model.recurrent and self.static_images else 1


SECTIONS = {"stream": StreamConfig, "model": ModelConfig, "sleep": SleepConfig, "topology": Topology, "security": SecurityConfig}


def positive(key: str, value: Any) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def _coerce(key: str, typ: Any, value: Any) -> Any:
    """A file or environment value to the field's type, or a ConfigError that names the key."""
    text = str(typ)
    try:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if "None" in text:
                return None
            raise ValueError("may not be empty")
        if "tuple[int | str" in text:  # layer specs: "500,500" or "conv:32x3x3,dense:1000"; checked by parse_layers
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(int(p) if str(p).strip().isdigit() else str(p).strip() for p in parts)
        if "tuple[int, int]" in text:
            parts = value if isinstance(value, (list, tuple)) else str(value).lower().replace("x", ",").split(",")
            return tuple(int(p) for p in parts)
        if "tuple[int" in text:
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(int(p) for p in parts)
        if "tuple[str" in text:
            return tuple(value if isinstance(value, (list, tuple)) else str(value).split(","))
        if text.startswith("bool") or text == "<class 'bool'>":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if "float" in text:
            return float(value)
        if "int" in text:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected an integer")
            return int(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: bad value {value!r} ({exc})") from None


def _apply(obj: Any, prefix: str, values: dict[str, Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"unknown config key {prefix}{name}; known: {', '.join(sorted(fields))}")
        setattr(obj, name, _coerce(prefix + name, fields[name].type, value))


def load(path: str | None = None, environ: dict[str, str] | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Defaults, then the JSON file, then FFSTREAM_* variables, then overrides (from the CLI)."""
    cfg = RunConfig()
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a JSON object")
        for key, value in data.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"config key {key!r} must be an object")
                _apply(getattr(cfg, key), f"{key}.", value)
            else:
                _apply(cfg, "", {key: value})
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if not name.startswith("FFSTREAM_"):
            continue
        key = name[len("FFSTREAM_") :].lower()
        section, _, field_name = key.partition("_")
        if section in SECTIONS and field_name:
            _apply(getattr(cfg, section), f"{name} -> {section}.", {field_name: value})
        elif key in {f.name for f in dataclasses.fields(RunConfig)}:
            _apply(cfg, f"{name} -> ", {key: value})
    for section, values in (overrides or {}).items():
        target = cfg if section == "" else getattr(cfg, section)
        for name, value in values.items():
            if value is not None:
                setattr(target, name, value)
    cfg.check()
    return cfg
