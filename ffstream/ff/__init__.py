"""Forward-Forward maths: pure torch, no sockets, no video.

Workers import from here; the in-process reference (`FFStack`) uses the very
same layer code, so the pipeline and the reference cannot drift apart.
"""

from ffstream.ff.config import LayerConfig
from ffstream.ff.goodness import goodness, probability_positive
from ffstream.ff.labels import embed_label, neutral_label
from ffstream.ff.layer import FFLayer, linear_decay
from ffstream.ff.norm import rms_normalize
from ffstream.ff.readout import LinearReadout
from ffstream.ff.spatial import SpatialConfig
from ffstream.ff.spec import make_layer, parse_layers
from ffstream.ff.stack import FFStack

__all__ = [
    "FFLayer",
    "FFStack",
    "LayerConfig",
    "LinearReadout",
    "SpatialConfig",
    "embed_label",
    "goodness",
    "linear_decay",
    "make_layer",
    "neutral_label",
    "parse_layers",
    "probability_positive",
    "rms_normalize",
]
