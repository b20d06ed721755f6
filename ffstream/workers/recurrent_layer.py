"""Where the recurrent layer worker was: it lives in ffstream/workers/layer/recurrent.py now."""

from ffstream.workers.layer.recurrent import HELD_KEYS, INTERLEAVED_BATCHES, RecurrentLayerWorker

__all__ = ["HELD_KEYS", "INTERLEAVED_BATCHES", "RecurrentLayerWorker"]
