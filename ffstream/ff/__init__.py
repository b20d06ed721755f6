"""Forward-Forward maths: pure torch, no sockets, no video.

Workers import from here; the in-process reference (`FFStack`) uses the very
same layer code, so the pipeline and the reference cannot drift apart.

The names below are imported when first used (PEP 562), not with the package: a process that reads only
configs and layer specs (config checks, the source and monitor workers) never imports torch. (The goodness function
lives in `ffstream.ff.goodness`, a module of the same name: import it from there.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {  # name -> the module that defines it
    "LayerConfig": "ffstream.ff.config",
    "probability_positive": "ffstream.ff.goodness",
    "embed_label": "ffstream.ff.labels",
    "neutral_label": "ffstream.ff.labels",
    "FFLayer": "ffstream.ff.layer",
    "RateSchedule": "ffstream.ff.schedule",
    "linear_decay": "ffstream.ff.schedule",
    "rms_normalize": "ffstream.ff.norm",
    "LinearReadout": "ffstream.ff.readout",
    "SpatialConfig": "ffstream.ff.spatial_config",
    "make_layer": "ffstream.ff.spec",
    "parse_layers": "ffstream.ff.spec",
    "FFStack": "ffstream.ff.stack",
}

__all__ = [
    "FFLayer",
    "FFStack",
    "LayerConfig",
    "LinearReadout",
    "RateSchedule",
    "SpatialConfig",
    "embed_label",
    "linear_decay",
    "make_layer",
    "neutral_label",
    "parse_layers",
    "probability_positive",
    "rms_normalize",
]
assert sorted(__all__) == sorted(_WHERE), "every lazy name is exported, and only those"


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from ffstream.ff.config import LayerConfig
    from ffstream.ff.goodness import probability_positive
    from ffstream.ff.labels import embed_label, neutral_label
    from ffstream.ff.layer import FFLayer
    from ffstream.ff.norm import rms_normalize
    from ffstream.ff.readout import LinearReadout
    from ffstream.ff.schedule import RateSchedule, linear_decay
    from ffstream.ff.spatial_config import SpatialConfig
    from ffstream.ff.spec import make_layer, parse_layers
    from ffstream.ff.stack import FFStack
