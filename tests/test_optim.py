"""The layers' own optimisers (ffstream/ff/optim.py) step exactly as torch.optim's fused ones, share their
state_dict format, and keep torch._dynamo out of a worker's start."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from ffstream.ff import FFLayer, LayerConfig, optim
from ffstream.ff.checkpoint import load_layer, save_layer_state

STEPS = 12
KINDS = {  # ours, torch's fused twin, on the same parameters' copies
    "adam": (lambda p: optim.Adam(p, lr=0.01, betas=(0.9, 0.999)),
             lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), fused=True)),
    "adam-decay": (lambda p: optim.Adam(p, lr=0.003, betas=(0.8, 0.999), weight_decay=1e-3),
                   lambda p: torch.optim.Adam(p, lr=0.003, betas=(0.8, 0.999), weight_decay=1e-3, fused=True)),
    "sgd-momentum": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3, fused=True)),
    "sgd-plain": (lambda p: optim.SGD(p, lr=0.1),
                  lambda p: torch.optim.SGD(p, lr=0.1, fused=True)),
}


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def parameters(seed: int = 0, device: str = "cpu") -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(7, 5, generator=gen).to(device)), torch.nn.Parameter(torch.randn(7, generator=gen).to(device))]


def step_both(ours, theirs, mine: list, twins: list, gen: torch.Generator, steps: int = STEPS) -> None:
    """The same random gradients into both; the learning rate decayed halfway, as LastGood.decay_lr does."""
    for i in range(steps):
        if i == steps // 2:
            for opt in (ours, theirs):
                opt.param_groups[0]["lr"] *= 0.5
        for p, q in zip(mine, twins):
            grad = torch.randn(p.shape, generator=gen).to(p.device)
            p.grad, q.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
        ours.zero_grad(set_to_none=True)
        theirs.zero_grad(set_to_none=True)


def assert_same(ours, theirs, mine: list, twins: list) -> None:
    for p, q in zip(mine, twins):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0)
        assert p.grad is None
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for index, state in b["state"].items():
        assert a["state"][index].keys() == state.keys(), index
        for name, value in state.items():
            mine_value = a["state"][index][name]
            assert mine_value.dtype == value.dtype and mine_value.device == value.device, (index, name)
            torch.testing.assert_close(mine_value, value, rtol=0, atol=0)
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] and a["param_groups"][0]["params"] == [0, 1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_steps_equal_torch_fused_optimisers(kind, device):
    make_ours, make_theirs = KINDS[kind]
    mine, twins = parameters(device=device), parameters(device=device)
    ours, theirs = make_ours(mine), make_theirs(twins)
    step_both(ours, theirs, mine, twins, torch.Generator().manual_seed(1))
    assert_same(ours, theirs, mine, twins)
    if kind != "sgd-plain":  # plain SGD keeps no state
        assert ours.state


@pytest.mark.parametrize("kind", KINDS)
def test_state_dicts_load_either_way_and_steps_go_on_equal(kind):
    make_ours, make_theirs = KINDS[kind]
    mine, twins = parameters(), parameters()
    ours, theirs = make_ours(mine), make_theirs(twins)
    gen = torch.Generator().manual_seed(2)
    step_both(ours, theirs, mine, twins, gen)
    # Each takes the other's state (deep copies: load_state_dict may keep the tensors it is given).
    resumed_ours, resumed_theirs = make_ours(mine), make_theirs(twins)
    resumed_ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    resumed_theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    step_both(resumed_ours, resumed_theirs, mine, twins, gen)
    assert_same(resumed_ours, resumed_theirs, mine, twins)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_a_checkpoint_written_with_torch_optim_state_loads_and_learns_on_equal(tmp_path, name):
    """A checkpoint from before ff/optim.py (the layer's optimiser then torch.optim's fused one) resumes unchanged."""
    cfg = LayerConfig(in_features=6, width=4, optimizer=name, lr=0.01, momentum=0.9, weight_decay=1e-3, seed=3)
    old = FFLayer(cfg)
    old.optimizer = (torch.optim.SGD(old.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
                     if name == "sgd" else
                     torch.optim.Adam(old.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay, fused=True))
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(4))
    for _ in range(3):
        old.learn(x)
    path = tmp_path / "layer1.safetensors"
    save_layer_state(path, cfg, old.state_dict(), old.optimizer.state_dict(), old.version, {})
    new = FFLayer(cfg)
    assert isinstance(new.optimizer, optim.FusedOptimizer)
    assert load_layer(path, new) == 3
    for _ in range(3):
        old.learn(x)
        new.learn(x)
    for (label, a), b in zip(old.named_parameters(), new.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=0, atol=0, msg=label)
    assert_same(new.optimizer, old.optimizer, list(new.parameters()), list(old.parameters()))


def test_a_mismatched_state_dict_is_refused():
    ours = optim.Adam(parameters())
    with pytest.raises(ValueError, match="other parameter groups"):
        ours.load_state_dict({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]})


def test_building_and_stepping_a_layer_never_imports_torch_dynamo():
    """In a fresh interpreter, as a worker starts: torch.optim's first optimiser would import it (~1 s of CPU)."""
    code = textwrap.dedent("""
        import sys, torch
        from ffstream.ff import FFLayer, LayerConfig, LinearReadout
        for name in ("adam", "sgd"):
            layer = FFLayer(LayerConfig(in_features=8, width=4, optimizer=name))
            layer.learn(torch.rand(3, 8))
            assert layer.optimizer.state, name
        readout = LinearReadout(4, 3)
        readout.learn(torch.rand(3, 4), torch.tensor([0, 1, 2]))
        print(sorted(m for m in sys.modules if m.startswith("torch._dynamo")))
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
