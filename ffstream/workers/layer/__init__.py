"""The layer worker (worker.py) and what it is made of: its step policies (policies.py), its step (stepping.py), its
input (intake.py, negatives.py), its output (outlet.py), its checkpoint, snapshots and last good state (weights.py), its
figures (figures.py), its side of exactly-once delivery (delivery.py), its weight previews (preview.py); and the recurrent
variant (recurrent.py)."""

from ffstream.workers.layer.negatives import MAX_PENDING_NEGATIVES
from ffstream.workers.layer.policies import END_PAIRING_WAIT_S, POLICIES, StepPolicy, choose
from ffstream.workers.layer.preview import PREVIEW_EVERY_S
from ffstream.workers.layer.worker import IDLE_WAKE_S, TRIM_EVERY_S, LayerWorker

__all__ = ["END_PAIRING_WAIT_S", "IDLE_WAKE_S", "MAX_PENDING_NEGATIVES", "POLICIES", "PREVIEW_EVERY_S", "TRIM_EVERY_S",
           "LayerWorker", "StepPolicy", "choose"]
