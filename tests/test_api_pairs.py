"""ffstream.load on a stack trained on SCFF pairs of centred frames: raw frames are prepared as `ffstream score` does."""

from __future__ import annotations

import numpy as np

import ffstream
from ffstream.ff import FFLayer, LayerConfig, checkpoint
from ffstream.offline.score import load_scoring_stack


def test_raw_frames_are_centred_and_self_paired_as_the_stack_learned(tmp_path):
    # layer 1 of a paired stack takes a frame beside another: 2 grey 8x8 frames, 128 values
    meta = {"frame_shape": [1, 8, 8], "pairs": True, "center": True}
    checkpoint.save_layer(checkpoint.layer_path(tmp_path, 1), FFLayer(LayerConfig(128, 16)), meta)
    stack = ffstream.load(tmp_path)
    raw = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    pixels = stack.prepare(raw)
    assert pixels.shape == (5, 2, 8, 8)  # the frame beside itself, as SCFF infers
    np.testing.assert_allclose(pixels[:, 0], pixels[:, 1])
    np.testing.assert_allclose(pixels.mean(axis=(1, 2, 3)), 0, atol=1e-6)  # centred
    _, _, preprocess = load_scoring_stack(tmp_path)
    np.testing.assert_allclose(pixels, preprocess.batch(raw), atol=1e-6)  # what `ffstream score` feeds the layers
    assert stack.goodness(raw).shape == (5, 1)  # before the fix: a shape error (raw frames were neither paired nor centred)
