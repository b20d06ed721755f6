"""`ffstream probe`: a linear probe (logistic regression by default) on a frozen stack, fitted on one labelled source, scored on another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ffstream.cli import main
from ffstream.offline.logistic import fit_logistic
from ffstream.offline.probe import fit_ridge
from ffstream.offline.score import read_csv
from tests.media import write_labels, write_video
from tests.processes import ROOT, env


def ffstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffstream", *args]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 2-layer stack trained by `ffstream run` on 500 frames of the synthetic clip with seed 1, and a labelled video."""
    tmp = tmp_path_factory.mktemp("probe")
    run = subprocess.run(
        ffstream("run", "--source", "synthetic:500:seed=1", "--max-frames", "500", "--set", "model.layers=40,40",
                 "--checkpoint-dir", str(tmp / "ck"), "--monitor", f"ipc://{tmp}/mon", "--http", "none", "--no-progress"),
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp)}, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    write_video(tmp / "clip.mp4", n=24)
    write_labels(tmp / "clip.csv", [i // 8 for i in range(24)])  # classes 0, 1, 2 in runs of 8 frames
    return tmp


def test_probe_json_on_two_seeds_of_the_clip(tiny, capsys):
    code = main(["probe", "--checkpoint-dir", str(tiny / "ck"), "--train", "synthetic:300:seed=1", "--test", "synthetic:200:seed=2", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"layers", "all", "pixels", "n_train", "n_test", "num_classes", "method"}
    assert result["method"] == "logistic"  # the in-process video study's probe, by default
    assert set(result["layers"]) == {"1", "2"}
    assert result["n_train"] == 300 and result["n_test"] == 200 and result["num_classes"] == 4
    for acc in [*result["layers"].values(), result["all"], result["pixels"]]:
        assert 0.0 <= acc <= 1.0


def test_probe_finds_a_test_videos_sidecar_and_prints_a_table(tiny, capsys):
    code = main(["probe", "--checkpoint-dir", str(tiny / "ck"), "--train", "synthetic:100:seed=1", "--test", str(tiny / "clip.mp4"),
                 "--no-pixels"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fitted on 100 frames" in out and "scored on 24 frames" in out, out
    assert "layer 1:" in out and "layer 2:" in out and "all layers:" in out and "raw pixels" not in out


def test_score_writes_the_sidecar_labels_as_a_column(tiny, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score", "--checkpoint-dir", str(tiny / "ck"), "--source", str(tiny / "clip.mp4"), "--out", str(out)]) == 0
    columns = read_csv(out)
    assert columns["label"].tolist() == [i // 8 for i in range(24)]
    assert columns["frame"].tolist() == list(range(24))


def test_eval_on_a_labelled_video(tiny, capsys):
    assert main(["eval", "--checkpoint-dir", str(tiny / "ck"), "--source", str(tiny / "clip.mp4"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 24


@pytest.mark.parametrize("case", ["unlabelled train", "no checkpoints"])
def test_probe_bad_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, case):
    write_video(tmp_path / "plain.mp4", n=4)
    ck, train, expected = {
        "unlabelled train": (tiny / "ck", str(tmp_path / "plain.mp4"), "has no labels"),
        "no checkpoints": (tmp_path, "synthetic:50", "no layer checkpoints"),
    }[case]
    code = main(["probe", "--checkpoint-dir", str(ck), "--train", train, "--test", "synthetic:50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], (code, err)


# --- the maths ----------------------------------------------------------------------------------


def test_ridge_probe_reads_labels_written_in_the_features():
    """Features that are the one-hot label plus noise: the probe scores every held-out row right."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=gen)
    x = torch.nn.functional.one_hot(y, 4).double() + 0.1 * torch.randn(200, 4, generator=gen, dtype=torch.float64)
    x = torch.cat([x, torch.randn(200, 6, generator=gen, dtype=torch.float64)], dim=1)  # 6 columns of pure noise
    probe = fit_ridge(x[:150], y[:150], 4)
    assert (probe.predict(x[150:]) == y[150:]).all()


def test_probe_method_ridge_is_kept_and_a_bad_method_is_refused(tiny, capsys):
    code = main(["probe", "--checkpoint-dir", str(tiny / "ck"), "--train", "synthetic:200:seed=1", "--test", "synthetic:100:seed=2",
                 "--no-pixels", "--method", "ridge", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["method"] == "ridge"
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--checkpoint-dir", str(tiny / "ck"), "--train", "x", "--test", "y", "--method", "svm"])
    assert exc.value.code == 2


def test_logistic_probe_reads_a_class_that_least_squares_masks():
    """Three classes in a row along one feature, the middle one the rarest (ESL's "masking"): least squares onto one-hot
    gives the middle class a flat score under the others', so ridge never names it; logistic regression separates all."""
    gen = torch.Generator().manual_seed(0)
    y = torch.multinomial(torch.tensor([0.4, 0.2, 0.4]), 600, replacement=True, generator=gen)
    x = torch.stack([y.float() - 1 + 0.05 * torch.randn(600, generator=gen), torch.randn(600, generator=gen)], dim=1)
    logistic = fit_logistic(x[:400], y[:400], 3)
    acc_logistic = float((logistic.predict(x[400:]) == y[400:]).float().mean())
    acc_ridge = float((fit_ridge(x[:400], y[:400], 3).predict(x[400:]) == y[400:]).float().mean())
    assert acc_logistic > 0.98 and acc_ridge < 0.9, (acc_logistic, acc_ridge)
    assert torch.equal(fit_logistic(x[:400], y[:400], 3).weight, logistic.weight)  # zeros start: deterministic


def test_ridge_probe_primal_and_dual_forms_agree_and_are_deterministic():
    """Fewer rows than features takes the dual (XXᵀ) route: the same weights as the primal, to rounding."""
    from ffstream.offline.probe import _fit

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 40, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=gen)
    dual = _fit(x, y, 3, (0.1,))[0]
    # the primal solution of the same problem, (XᵀX + λI) W = XᵀY, λ in units of XᵀX's mean eigenvalue
    xs = (x - dual.mean) / dual.scale
    targets = torch.nn.functional.one_hot(y, 3).double() - dual.bias
    gram = xs.T @ xs
    unit = float(torch.trace(gram)) / 40
    primal = torch.linalg.solve(gram + 0.1 * unit * torch.eye(40, dtype=torch.float64), xs.T @ targets)
    assert torch.allclose(dual.weight, primal, atol=1e-8)
    again = _fit(x, y, 3, (0.1,))[0]
    assert torch.equal(again.weight, dual.weight)
