"""The config sections: one small dataclass per concept, each field with its unit and default.

Nothing here imports torch at import time (`ffstream --help` must not pay for it): the layer maths is imported
inside the methods that build layers. The cross-field rules live in `rules`, the loading in `loading`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ffstream.config import rules
from ffstream.config.plans import Batching, LayerEndpoints, SleepPlan
from ffstream.config.rules import ConfigError
from ffstream.ff.schedule import RateSchedule

if TYPE_CHECKING:
    from ffstream.ff.config import LayerConfig
    from ffstream.ff.recurrent_config import RecurrentConfig

DEFAULT_MONITOR = "tcp://127.0.0.1:5570"
DEFAULT_MONITOR_HTTP = "http://127.0.0.1:5572"
DEFAULT_LR = 1e-3  # the layers' learning rate
# A recurrent run on images makes `iterations` layer steps per image (8 by default). At one epoch of 2x500 on
# Fashion-MNIST, 2.5e-4 instead of 1e-3 kept the energy (83.50 against 83.00 %) and raised the head from 65.27 to
# 80.15 % and the probe from 76.29 to 84.47 % (BENCHMARKS.md, "Recurrent top-down").
RECURRENT_IMAGE_LR = 2.5e-4


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
    # Exactly-once learning of files and datasets (DESIGN.md §2 "Delivery", with a checkpoint directory): a barrier every this
    # many batches, at which every worker checkpoints and the source commits its position once the sink acknowledges it.
    # 0: off. Live sources never take barriers (at most once, drops counted); nor do recurrent static images (steps per batch).
    barrier_every: int = 50
    # ... and at least this many seconds after the last one (Flink's minimum pause between checkpoints): each barrier
    # writes every layer's weights and optimiser state (48 MB for a 2000-wide layer), which a fast stream would pay
    # every few seconds. A restart replays at most max(barrier_every batches, barrier_min_s) of the stream.
    barrier_min_s: float = 10.0
    center: bool = False  # subtract each frame's own mean after scaling: a clip's background level is then no cue (SCFF on video)
    # Self-contrastive pairs (SCFF): layer 1 sees each frame stacked with the one before it along channels, (2C, H, W),
    # the previous frame kept across batches; the sleep worker pairs each frame with an old one (sleep.negatives "scff"),
    # or with its predecessor in reverse or an old one ("temporal").
    # Offline (probe, eval, score) a frame is paired with itself. The two go together: rules.check_run.
    pairs: bool = False

    def check(self) -> None:
        rules.check_stream(self)

    @property
    def supervised(self) -> bool:
        return self.task == "supervised"

    @property
    def input_size(self) -> int:
        return (3 if self.color else 1) * self.size[0] * self.size[1]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a frame as the source reads it (and publishes it to the sleep worker)."""
        return (3 if self.color else 1, *self.size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what layer 1 takes: a frame, or with pairs two frames stacked along channels."""
        c, h, w = self.frame_shape
        return (2 * c if self.pairs else c, h, w)


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
    lr_half_life: int = 0  # frames per halving of the layers' learning rate where it does not decay linearly (ff/schedule.py); 0: constant
    lr_floor: float = 0.1  # the lowest scale lr_half_life takes the learning rate to
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
    # conv/local: what the sink's readout and the offline probes read of each map: "grid" (7x7 cell averages) or "global"
    # (the mean and max over the whole map: position does not count, as a moving object wants)
    readout_pool: str = "grid"
    # inference only, on a trained stack (its --checkpoint-dir): layers forward every frame and never step, and no
    # sleep worker runs (loading turns sleep.enabled off); the sink still scores novelty and publishes features
    freeze: bool = False

    def recurrent_config(self) -> RecurrentConfig:
        from ffstream.ff.recurrent_config import RecurrentConfig  # torch-free

        try:
            return RecurrentConfig(iterations=self.iterations, window=tuple(self.window))
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None

    def check(self) -> None:
        rules.check_model(self)

    def layer_configs(self, input_shape: tuple[int, int, int], seed: int, num_classes: int | None, lr: float) -> list[LayerConfig]:
        """input_shape: (C, H, W) of layer 1's input; num_classes: the label groups of channel-wise competition; lr: the layers' rate."""
        from ffstream.ff.spec import build_configs, parse_layers  # torch-free

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
                readout_pool=self.readout_pool,
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
    negatives: str | None = None  # "random", "hard", "hybrid", "scff" or "temporal" (both need stream.pairs); None: random when supervised, else scff with pairs, else hybrid
    sleep_every: int = 10  # wake batches between snapshot refreshes, as the layers step them (a recurrent image: one per iteration)
    reservoir: int = 4096  # raw frames kept for negatives
    update: str = "inputs"  # what layers are sent: "inputs" (judged on current weights) or "gradient" (taken on the snapshot)
    phased: bool = False  # sleep in phases: the source pauses after every sleep_every batches while the negatives run
    route: str = "snapshot"  # "snapshot": negatives for every layer made here on snapshots; "chain": layer 1's only, each layer passes its own up

    def plan(self, supervised: bool, pairs: bool = False) -> SleepPlan:
        kind = self.negatives or ("random" if supervised else "scff" if pairs else "hybrid")
        try:
            return SleepPlan(negatives=kind, sleep_every=self.sleep_every, reservoir=self.reservoir, update=self.update, phased=self.phased,
                             route=self.route)
        except ValueError as exc:
            raise ConfigError(f"sleep: {exc}") from None


@dataclass
class Topology:
    """Where every socket lives. Stable sides bind: each layer its inputs, the sink, the source's publisher, the monitor."""

    source_publish: str = "tcp://127.0.0.1:5560"  # source XPUB of raw frames for the sleep worker
    source_control: str = "tcp://127.0.0.1:5561"  # source PULL: the sleep worker's "resume" in phased mode; the sink's barrier acks
    layer_inputs: tuple[str, ...] = ()  # per layer, PULL of frames/activity
    layer_negatives: tuple[str, ...] = ()  # per layer, PULL of negative updates
    layer_snapshots: tuple[str, ...] = ()  # per layer, REP for snapshots
    layer_feedbacks: tuple[str, ...] = ()  # per layer, PULL of top-down feedback from the layer above (recurrent runs)
    sink_input: str = "tcp://127.0.0.1:5590"  # sink PULL
    sink_snapshot: str = "tcp://127.0.0.1:5592"  # sink REP: the softmax head's weights, for hard negatives
    monitor_collect: str = "tcp://127.0.0.1:5571"  # monitor XSUB, workers publish metrics here
    monitor_publish: str = DEFAULT_MONITOR  # monitor XPUB, clients subscribe here
    # sink PUB, bound: each learned frame's normalised activity per layer (wire v1 "activity" messages (B, F), in stream
    # order, the layers side by side as extra "blocks" (widths) and "block_layers" (1-based) say, the per-layer goodness
    # in "trace"); None: off. A subscriber that falls behind holds a file or dataset source up (nothing is dropped);
    # on a live source it holds the sink up to 1 s a message, which is then dropped and counted.
    features: str | None = None
    features_layers: tuple[int, ...] | None = None  # which layers' activity `features` publishes, 1-based, e.g. 1,3; None: every layer
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
class NoveltyConfig:
    """The sink's live novelty (ffstream.monitor.novelty): goodness per layer against its recent quantiles, and alerts."""

    window: int = 1000  # recent frames whose goodness quantiles calibrate each layer
    warmup: int = 100  # frames before the first score (at most window)
    threshold: float = 3.0  # novelty, interquartile ranges from the recent median at some layer (either way), above which a frame counts
    alert_frames: int = 5  # frames in a row above the threshold that raise one alert
    events: str | None = None  # JSONL file that gets a line per alert; None: none
    on_alert: str | None = None  # shell command run (not waited for) on each alert, FFSTREAM_ALERT_FRAME and _SCORE set; None: none

    def check(self) -> None:
        rules.check_novelty(self)


@dataclass
class SecurityConfig:
    """CURVE between hosts (ffstream.net.security). Off unless curve_dir is set; then on every tcp link, loopback too (not ipc)."""

    curve_dir: str | None = None  # keys from `ffstream keys generate DIR`; None: no CURVE
    curve_client: str | None = None  # a worker's client key pair, DIR/<name>.key_secret; None: its role's (source, layer, sleep, sink, monitor)
    # Bind non-loopback tcp without CURVE anyway (default False: such a bind is refused in one line, since anyone who
    # reaches the port could send frames, negatives or `end`). Only for a network no one else is on, such as
    # docker-compose's private network on one host (FFSTREAM_SECURITY_ALLOW_PLAINTEXT=true).
    allow_plaintext: bool = False
    # The monitor's HTTP side (dashboard, /events, /metrics, /api/*) asks for `Authorization: Bearer TOKEN`, or HTTP
    # Basic with TOKEN as the password (what a browser prompts for), and answers 401 otherwise; the page's static
    # files stay open. None (default): no token asked. FFSTREAM_SECURITY_HTTP_TOKEN. HTTP itself is plaintext: on a
    # shared network put TLS in front of it.
    http_token: str | None = None


@dataclass
class RunConfig:
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sleep: SleepConfig = field(default_factory=SleepConfig)
    topology: Topology = field(default_factory=Topology)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    novelty: NoveltyConfig = field(default_factory=NoveltyConfig)
    checkpoint_dir: str | None = None  # layer checkpoints and the readout; None keeps nothing
    checkpoint_every_s: float = 60.0  # seconds between periodic checkpoints (layers, and the sink's head and counters)
    restart_budget: int = 5  # `ffstream run`: crashes of one worker within restart_window_s that are restarted; one more fails the run
    restart_window_s: float = 600.0  # seconds the restart budget slides over: rare crashes go on, a crash loop does not
    stall_after_s: float = 60.0  # `ffstream run`: a live worker silent this long while its input grew is restarted (supervisor.StallWatch); 0 never
    scores: str | None = None  # JSONL of per-frame goodness, written by the sink
    device: str = "cpu"  # torch device of the layer workers: cpu, cuda, cuda:N
    threads: int | None = None  # torch threads per worker; None: cores shared among the compute workers
    health_dir: str | None = None  # each worker's heartbeat <name>.json for `ffstream check`; None writes none

    def check(self) -> None:
        rules.check_run(self)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def recipe_json(self) -> str:
        """What was learned and how, without where it ran (topology, security): `<checkpoint-dir>/run.json`,
        which `--recipe DIR` (or the file) runs again and `eval` / `score` read back."""
        data = dataclasses.asdict(self)
        del data["topology"], data["security"]
        return json.dumps(data, indent=1)

    def sleep_plan(self) -> SleepPlan:
        """The sleep worker's plan. Wrong-label negatives by default where labels are written into the frames;
        channel-wise competition has its labels as targets, so its default is hybrids."""
        return self.sleep.plan(self.stream.supervised and not self.model.competition, self.stream.pairs)

    def layer_configs(self) -> list[LayerConfig]:
        return self.model.layer_configs(self.stream.input_shape, self.stream.seed, self.stream.num_classes, self.layer_lr)

    def rate_schedule(self) -> RateSchedule:
        """How the layers' learning rate falls: linearly over a stream of known length (lr_decay; every step of a
        recurrent image is a learned row, so it spans them all), else halving every lr_half_life frames, else constant."""
        known = self.stream.total_frames * self.steps_per_batch if self.model.lr_decay and self.stream.total_frames else None
        return RateSchedule(decay_frames=known, half_life=self.model.lr_half_life or None, floor=self.model.lr_floor)

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


SECTIONS = {"stream": StreamConfig, "model": ModelConfig, "sleep": SleepConfig, "topology": Topology, "security": SecurityConfig, "novelty": NoveltyConfig}
