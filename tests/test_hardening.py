"""Issue 20: configs that cannot work are refused at start; a sink that remembers; no worker outlives its supervisor."""

from __future__ import annotations

import pytest

from ffstream.config import ConfigError, RunConfig
from ffstream.supervisor import check_header_fits


def test_a_batch_whose_trace_cannot_fit_in_a_header_is_refused_in_one_line():
    cfg = RunConfig()
    cfg.stream.batch, cfg.model.layers, cfg.stream.num_classes = 2048, (500, 500, 500, 500), 10
    with pytest.raises(ConfigError) as info:
        check_header_fits(cfg)
    message = str(info.value)
    assert "\n" not in message and "stream.batch 2048" in message and "65536" in message
    fits = int(message.rsplit(" ", 1)[1])  # "use a batch of at most N": and N does fit
    cfg.stream.batch = fits
    check_header_fits(cfg)
    cfg.stream.batch = fits + 1
    with pytest.raises(ConfigError):
        check_header_fits(cfg)


def test_the_default_batch_fits():
    check_header_fits(RunConfig())
