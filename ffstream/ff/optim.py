"""The layers' optimisers, Adam and SGD with momentum, stepping with torch's own fused CPU/CUDA kernels.

Why not `torch.optim`: building its first optimiser imports torch._dynamo (its methods are wrapped by
`torch._disable_dynamo`), about 1.1 s of CPU at every worker start, before the first frame is learned. These call
the very kernels that `torch.optim.Adam(..., fused=True)` and `SGD(..., fused=True)` call, in the same order, so a
step is bit for bit theirs (tests/test_optim.py), and `state_dict()` is in torch's format: checkpoints written
with torch.optim load here, and the other way round.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = Adam([w], lr=0.1)
    >>> w.grad = torch.ones(3)
    >>> opt.step(); opt.zero_grad(set_to_none=True)
    >>> w.detach(), float(opt.state[w]["step"])
    (tensor([0.9000, 0.9000, 0.9000]), 1.0)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

Group = dict[str, Any]  # "params": [Parameter, ...] and the hyperparameters, as torch.optim's param_groups


class FusedOptimizer:
    """What the two share: one parameter group, per-parameter state, torch's state_dict format."""

    def __init__(self, params: Iterable[torch.nn.Parameter], **hyper: Any):
        self.param_groups: list[Group] = [{"params": list(params), **hyper}]
        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)

    def step(self) -> None:
        with torch.no_grad():  # the kernels write the leaf parameters in place
            for group in self.param_groups:
                with_grad = [p for p in group["params"] if p.grad is not None]  # torch.optim skips the rest too
                for params in _by_device_and_dtype(with_grad):
                    self._step(group, params)

    def _step(self, group: Group, params: list[torch.nn.Parameter]) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {name: tensor}}, "param_groups": [{..., "params": [index, ...]}]}: torch's format, and as
        torch's, the state's tensors themselves, not copies."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": [index[id(p)] for p in group["params"]]})
        return {"state": {index[id(p)]: state for p, state in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """From our state_dict or torch.optim's (a checkpoint's). As torch's: the saved hyperparameters (lr above
        all) replace ours, and a tensor already of its parameter's dtype and device is taken as is, not copied."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError("the saved optimiser state has other parameter groups than this optimiser")
        params = {i: p for s, g in zip(saved_groups, self.param_groups) for i, p in zip(s["params"], g["params"])}
        self.state = defaultdict(dict)
        for i, saved in state_dict["state"].items():
            param = params[int(i)]
            self.state[param] = {name: _cast(name, value, param) for name, value in saved.items()}
        self.param_groups = [{**{k: v for k, v in s.items() if k != "params"}, "params": g["params"]}
                             for s, g in zip(saved_groups, self.param_groups)]


class Adam(FusedOptimizer):
    """torch.optim.Adam(params, lr, betas, eps, weight_decay, fused=True), L2 weight decay (not AdamW's)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=False,
                         maximize=False, fused=True)

    def _step(self, group: Group, params: list[torch.nn.Parameter]) -> None:
        for p in params:
            state = self.state[p]
            if not state:  # as torch's: allocated at the first step; the step count a float32 beside the parameter
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)  # before the kernel, which reads the new count for its bias correction
        beta1, beta2 = group["betas"]
        torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                           beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                           grad_scale=None, found_inf=None)


class SGD(FusedOptimizer):
    """torch.optim.SGD(params, lr, momentum, weight_decay, fused=True): no dampening, not Nesterov."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, dampening=0.0, weight_decay=weight_decay, nesterov=False,
                         maximize=False, fused=True)

    def _step(self, group: Group, params: list[torch.nn.Parameter]) -> None:
        momentum = group["momentum"]
        buffers: list[torch.Tensor] = []
        first = False
        if momentum != 0:
            held = [self.state[p].get("momentum_buffer") for p in params]
            first = all(b is None for b in held)  # the kernel then starts each buffer at the gradient, as torch's
            buffers = [torch.empty_like(p.grad) for p in params] if first else held
        torch._fused_sgd_(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                          momentum=momentum, lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                          maximize=False, is_first_step=first, grad_scale=None, found_inf=None)
        if momentum != 0:
            for p, buffer in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buffer


def _by_device_and_dtype(params: list[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    """The kernels take one device and dtype per call (a layer's parameters are all one)."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    return list(groups.values())


def _cast(name: str, value: Any, param: torch.Tensor) -> Any:
    """A loaded state value onto its parameter's device: the step count a float32 there (fused kernels read it
    there), the moments in the parameter's dtype; as torch.optim's load_state_dict does for a fused optimiser."""
    if not isinstance(value, torch.Tensor):
        return value
    if name == "step":
        return value.to(dtype=torch.float32, device=param.device)
    if param.is_floating_point():
        return value.to(dtype=param.dtype, device=param.device)
    return value.to(device=param.device)
