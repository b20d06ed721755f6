"""net/carry.py: learn messages carry the chosen layers' activity up to the sink, and the sink cuts out what it publishes."""

from __future__ import annotations

import numpy as np

from ffstream.net import carry


def stack_of(widths: list[int], wanted: set[int], rows: int = 3) -> tuple[np.ndarray, dict, list[np.ndarray]]:
    """What the top layer sends when layers of these widths carry `wanted`; each layer's activity is filled with its number."""
    array, extra, acts = np.zeros((rows, 5), np.float32), {}, []
    for index, width in enumerate(widths, start=1):
        act = np.full((rows, width), float(index), np.float32)
        acts.append(act)
        array, extra = carry.add_layer(array, extra, act, index, wanted)
    return array, extra, acts


def test_only_the_chosen_layers_travel_beside_the_activity():
    array, extra, _ = stack_of([4, 6, 2, 3], wanted={1, 3})
    assert extra["blocks"] == [4, 2, 3] and extra["block_layers"] == [1, 3, 4]  # layer 2 dropped on the way, layer 4 is the input of the next
    assert np.array_equal(array[:, :4], np.full((3, 4), 1.0)) and np.array_equal(array[:, 4:6], np.full((3, 2), 3.0))


def test_the_sink_publishes_the_chosen_blocks_in_layer_order():
    array, extra, acts = stack_of([4, 6, 2], wanted={1, 2, 3})
    out, widths, layers = carry.published(array, extra, {1, 2, 3})
    assert widths == [4, 6, 2] and layers == [1, 2, 3]
    assert np.array_equal(out, np.concatenate(acts, axis=1))
    out, widths, layers = carry.published(array, extra, {2})
    assert widths == [6] and layers == [2] and np.array_equal(out, acts[1])


def test_spatial_activity_is_flattened_and_the_input_is_the_last_block():
    act = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)  # (B, C, H, W)
    array, extra = carry.add_layer(np.zeros((2, 1), np.float32), {}, act, 1, {1})
    assert array.shape == (2, 12) and np.array_equal(array, act.reshape(2, -1))
    from ffstream.net.blocks import layer_input
    assert np.array_equal(layer_input(array, extra["blocks"], 12), act.reshape(2, -1))  # what layer 2's intake reads


def test_a_message_without_blocks_publishes_nothing():
    assert carry.published(np.ones((2, 4), np.float32), {}, {1}) is None
    assert carry.published(np.ones((2, 4), np.float32), {"blocks": [3], "block_layers": [1]}, {1}) is None  # widths do not add up
