"""`ffstream bench recurrent`, the Fashion-MNIST part, end to end on a small stack and the real IDX files:
both pipelines run at the learning rate given, and each reports its readouts.

Accuracy floors only (far above the 10 % of chance); the comparison itself belongs in BENCHMARKS.md.
"""

import json

import pytest

import ffstream.bench.recurrent as bench
from ffstream.sources import Preprocess, SourceError, dataset_arrays


def test_both_pipelines_run_at_the_given_learning_rate_and_report_their_readouts(monkeypatch):
    try:
        dataset_arrays("fashion-mnist:test", Preprocess())
    except SourceError as exc:
        pytest.fail(f"Fashion-MNIST is needed (apt-get install dataset-fashion-mnist): {exc}")
    seen = []
    real = bench.run_pipeline

    def recording(cfg, test_spec):  # the real pipeline, noting what it was asked to run
        seen.append((cfg.model.recurrent, cfg.model.lr, cfg.model.iterations))
        return real(cfg, test_spec)

    monkeypatch.setattr(bench, "run_pipeline", recording)
    r = bench.recurrent_benchmark((64, 64), 1, 64, 640, 4, (2, 3), None, 16, None, lr=5e-4)
    json.dumps(r)  # one JSON object
    assert seen == [(False, 5e-4, 4), (True, 5e-4, 4)]
    assert r["lr"] == 5e-4 and "lr 0.0005" in bench.format_result(r)
    for name in ("feedforward", "recurrent"):
        m = r["images"][name]
        assert m["n"] == 10000 and m["frames"] > 0, (name, m)
        assert 0.0 <= m["accuracy_energy"] <= 1.0, (name, m)  # 640 frames are too few for energy to be steady (0.15 seen)
        assert 0.5 < m["accuracy_probe"] <= 1.0, (name, m)
