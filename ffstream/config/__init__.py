"""Run configuration: one small dataclass per concept, built from recipe, file, environment and CLI in one place.

    sections   the dataclasses (stream, model, sleep, topology, security, and RunConfig over them)
    rules      the cross-field checks, each stated once (RunConfig.check)
    loading    the layers and their precedence: defaults < recipe < --config < FFSTREAM_* < --set < flags
    recipes    the shipped recipes (recipes/NAME.json) and a checkpoint directory's run.json
    plans      what each worker is handed (endpoints, batching, the sleep plan)

Importing this package does not import torch. Each worker is handed only the fields it needs
(see ffstream.workers.build); config never imports a worker.
"""

from ffstream.config.loading import coerce, load, parse_sets, recorded
from ffstream.config.plans import LIVE_MAX_HELD, Batching, LayerEndpoints, SleepPlan
from ffstream.config.rules import ConfigError, positive
from ffstream.config.sections import (
    DEFAULT_LR,
    DEFAULT_MONITOR,
    DEFAULT_MONITOR_HTTP,
    RECURRENT_IMAGE_LR,
    SECTIONS,
    ModelConfig,
    RunConfig,
    SecurityConfig,
    SleepConfig,
    StreamConfig,
    Topology,
)

__all__ = [
    "DEFAULT_LR", "DEFAULT_MONITOR", "DEFAULT_MONITOR_HTTP", "LIVE_MAX_HELD", "RECURRENT_IMAGE_LR", "SECTIONS",
    "Batching", "ConfigError", "LayerEndpoints", "ModelConfig", "RunConfig", "SecurityConfig", "SleepConfig", "SleepPlan",
    "StreamConfig", "Topology", "coerce", "load", "parse_sets", "positive", "recorded",
]
