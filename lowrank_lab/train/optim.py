"""AdamW with one learning rate per cell of a pack, for packed parameters (K, ...).

A pack stores the K cells' adapters and heads as one tensor each, cell n at index n of dim 0
(``model.lora.LoRALinear``: A (K, r_max, k), B (K, d, r_max)). When the cells of a pack have different
learning rates, one torch AdamW over those tensors cannot serve them: this optimizer applies
AdamW (Loshchilov & Hutter 2019, decoupled weight decay; the update of torch.optim.AdamW) with
lr_n = schedule(t) · lr[n] to slice n, so a pack of K cells takes exactly the steps of K separate
AdamW runs. AdamW's moments are elementwise, so slices never interact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor


class CellAdamW(torch.optim.Optimizer):
    """AdamW whose groups carry ``cell_lr`` (K,): slice n of every (K, ...) parameter of the group
    steps with ``group["lr"] · cell_lr[n]``. ``group["lr"]`` is the schedule's multiplier (start
    1.0, so torch's LambdaLR scales every cell by the same factor, as one run per cell would be).

    Per step t, for slice n (moments m, v elementwise; β1, β2, ε, λ as torch.optim.AdamW):
        θ ← θ·(1 − η_n·λ);  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;
        θ ← θ − η_n/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε),   η_n = lr_t · cell_lr[n].
    """

    def __init__(self, groups: Iterable[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        groups = [dict(g) for g in groups]
        for g in groups:
            g["cell_lr"] = tuple(float(lr) for lr in g["cell_lr"])  # floats: the state dict stays JSON
            g.setdefault("lr", 1.0)
            for p in g["params"]:
                if p.shape[0] != len(g["cell_lr"]):
                    raise ValueError(f"CellAdamW: a parameter of shape {tuple(p.shape)} has no slice per cell "
                                     f"({len(g['cell_lr'])} learning rates)")
        super().__init__(groups, {"betas": betas, "eps": eps, "weight_decay": weight_decay, "lr": 1.0})

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "CellAdamW takes no closure"
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] = int(state["step"]) + 1  # an int, also after a checkpoint restored it as a tensor
                self._update(p, state, group, beta1, beta2)

    @staticmethod
    def _update(p: Tensor, state: dict, group: dict, beta1: float, beta2: float) -> None:
        t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
        eta = torch.tensor([group["lr"] * lr for lr in group["cell_lr"]], dtype=p.dtype, device=p.device)
        eta = eta.reshape(-1, *([1] * (p.ndim - 1)))
        p.mul_(1 - eta * group["weight_decay"])
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
        p.sub_(eta / (1 - beta1 ** t) * m / denom)


def lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Linear warm-up over warmup_ratio·total steps, then linear decay to 0."""
    warmup = int(math.ceil(warmup_ratio * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return f
