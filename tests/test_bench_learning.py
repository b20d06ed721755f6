"""`ffstream bench learning` end to end on a small stack and the real Fashion-MNIST IDX files: the pipeline
and the in-process reference each report energy, online-head and probe accuracy, and both learned.

Accuracy floors only (far above the 10 % of chance, far below the benchmark's figures): the targets belong
in BENCHMARKS.md.
"""

import json

import pytest
import torch

import ffstream.bench.learning as bench
from ffstream.bench.learning import format_result, learning_benchmark, learning_config
from ffstream.sources import Preprocess, SourceError, dataset_arrays


@pytest.fixture(scope="module")
def fashion_mnist():
    try:
        dataset_arrays("fashion-mnist:test", Preprocess())
    except SourceError as exc:
        pytest.fail(f"Fashion-MNIST is needed (apt-get install dataset-fashion-mnist): {exc}")


def test_supervised_benchmark_scores_energy_head_and_probe(fashion_mnist):
    cfg = learning_config("supervised", (200, 200), 1, 64, 10, "random", 1e-3, 0, max_frames=3000)
    r = learning_benchmark(cfg)
    json.dumps(r)  # one JSON object
    for run in ("pipeline", "reference"):
        m = r[run]
        assert m["n"] == 10000 and m["frames"] == 3000
        assert m["probe_layers"] == [1, 2], "the supervised probe reads every layer"
        # 3,000 frames are too few for energy to be steady (0.18 seen in the pipeline): only its range is checked.
        assert 0.0 <= m["accuracy_energy"] <= 1.0
        assert 0.5 < m["accuracy_softmax"] <= 1.0, f"{run} online head = {m['accuracy_softmax']}"
        assert 0.7 < m["accuracy_probe"] <= 1.0, f"{run} probe = {m['accuracy_probe']}"
    assert r["gap_points"] == pytest.approx(100 * (r["reference"]["accuracy_energy"] - r["pipeline"]["accuracy_energy"]), abs=0.01)
    assert "probe" in format_result(r)


def test_threads_set_the_reference_and_are_given_back(fashion_mnist, monkeypatch):
    seen = []
    real = bench.train_reference

    def recording(cfg, directory):  # the real reference, noting the threads it ran with
        seen.append(torch.get_num_threads())
        return real(cfg, directory)

    monkeypatch.setattr(bench, "train_reference", recording)
    before = torch.get_num_threads()
    cfg = learning_config("supervised", (50,), 1, 64, 10, "random", 1e-3, 0, max_frames=640)
    cfg.threads = 1 if before > 1 else 2
    out = bench.run_reference(cfg, "fashion-mnist:test")
    assert seen == [cfg.threads] and out["threads"] == cfg.threads
    assert torch.get_num_threads() == before, "the caller's threads are restored"
