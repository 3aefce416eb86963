"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), K of them in one forward pass.

An adapter is a small residual MLP on the output h (d_model) of a sublayer, before its residual
addition (Houlsby et al. 2019, §2.1 and Fig. 2)::

    h' = h + W_up·f(W_down·h + b_down) + b_up,    W_down m×d, W_up d×m, m ≪ d the bottleneck size

W_up = 0 and b_up = 0 at initialisation, so h' = h and the model starts as the base (Houlsby's
"near-identity" initialisation, made exact); W_down and b_down start as nn.Linear's, so the
gradient reaches W_up at the first step and W_down from the second, as LoRA's A and B.

Placements (``PLACEMENTS``, the matrix kinds of ``model.base`` whose output is adapted):
- "houlsby": after the attention's output projection (o) and after the MLP's down projection:
  two adapters per layer; f = SiLU (AdapterHub's HoulsbyConfig).
- "pfeiffer": after the MLP's down projection only: one per layer; f = ReLU (AdapterHub's
  PfeifferConfig). Pfeiffer et al. (AdapterFusion, 2021, §3) place it after the MLP's
  LayerNorm and reuse that LayerNorm around it; here it sits where Houlsby's second adapter sits.

Both papers also train the LayerNorms (the 2·L̂_LN·d_model term of Hu et al. 2021, §5.1); here they
stay frozen, so that K adapters share one base. Trainable parameters per adapter of size m on a
d-dimensional output: 2·d·m + m + d, and in all (``adapter_parameters``)
|Θ| = L̂_Adpt·(2·d_model·m + m + d_model), L̂_Adpt the number of adapters (Hu et al. 2021, §5.1,
with L̂_LN = 0).

Packing: rows [n·b, (n+1)·b) of the batch belong to adapter n, as in ``model.lora``. Sizes may
differ: the weights are stored zero-padded to m_max. A padded unit has W_down row, b_down entry and
W_up column 0, so its activation is f(0) = 0 (ReLU and SiLU) and every gradient reaching it is 0:
AdamW keeps it at 0 and adapter n stays exactly of size m_n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lowrank_lab.model.lora import base_shape

# The kinds (model.base's labels) each placement adapts, and its nonlinearity.
PLACEMENTS: dict[str, tuple[str, ...]] = {"houlsby": ("o", "down"), "pfeiffer": ("down",)}
ACTIVATIONS: dict[str, str] = {"houlsby": "silu", "pfeiffer": "relu"}
_FUNCTIONS = {"silu": nn.functional.silu, "relu": nn.functional.relu}


def adapter_parameters(d_model: int, m: int, n_adapters: int) -> int:
    """|Θ| = L̂_Adpt·(2·d_model·m + m + d_model): W_down, W_up and both biases of every adapter
    (Hu et al. 2021, §5.1, Adapter^H, with the LayerNorms frozen: L̂_LN = 0)."""
    return n_adapters * (2 * d_model * m + m + d_model)


class BottleneckAdapter(nn.Module):
    """K bottleneck adapters on the output of one frozen linear map (nn.Linear or GPT-2's Conv1D);
    adapter n has size ``sizes[n]``."""

    def __init__(self, base: nn.Module, sizes: Sequence[int], activation: str):
        super().__init__()
        if not sizes or min(sizes) <= 0:
            raise ValueError("BottleneckAdapter: give one positive bottleneck size per adapter")
        if activation not in _FUNCTIONS:
            raise ValueError(f"activation={activation!r}: use one of {', '.join(_FUNCTIONS)}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.d = base_shape(base)[0]
        self.sizes = tuple(int(m) for m in sizes)
        self.activation = activation
        K, m_max, dtype = len(sizes), max(self.sizes), base.weight.dtype
        self.down = nn.Parameter(torch.zeros(K, m_max, self.d, dtype=dtype))
        self.down_bias = nn.Parameter(torch.zeros(K, m_max, dtype=dtype))
        self.up = nn.Parameter(torch.zeros(K, self.d, m_max, dtype=dtype))
        self.up_bias = nn.Parameter(torch.zeros(K, self.d, dtype=dtype))

    @property
    def n_adapters(self) -> int:
        return len(self.sizes)

    @torch.no_grad()
    def reset_adapter(self, n: int, generator: torch.Generator) -> None:
        """W_down, b_down of adapter n as nn.Linear's (U(−1/√d, 1/√d)), padding 0; W_up = 0, b_up = 0."""
        for p in (self.down, self.down_bias, self.up, self.up_bias):
            p[n].zero_()
        m, bound = self.sizes[n], 1.0 / math.sqrt(self.d)
        for p in (self.down[n, :m], self.down_bias[n, :m]):
            p.copy_((torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)

    def factors(self, n: int) -> dict[str, Tensor]:
        """Adapter n's weights without the padding: down (m×d), down_bias (m), up (d×m), up_bias (d)."""
        m = self.sizes[n]
        return {"down": self.down[n, :m], "down_bias": self.down_bias[n, :m], "up": self.up[n, :, :m],
                "up_bias": self.up_bias[n]}

    def forward(self, x: Tensor) -> Tensor:
        h = self.base(x)
        hs = h.reshape(self.n_adapters, -1, self.d)
        # (K, N, d) → (K, N, m) → (K, N, d): two batched products, each cell with its own weights
        z = _FUNCTIONS[self.activation](torch.baddbmm(self.down_bias.to(hs.dtype)[:, None], hs,
                                                      self.down.mT.to(hs.dtype)))
        y = torch.baddbmm(self.up_bias.to(hs.dtype)[:, None], z, self.up.mT.to(hs.dtype))
        return h + y.reshape(h.shape)


def inject_bottleneck(model: nn.Module, paths: Sequence[str], sizes: Sequence[int],
                      activation: str) -> dict[str, BottleneckAdapter]:
    """Wrap each module at `paths` in a BottleneckAdapter of K adapters of sizes `sizes` (one per
    adapter, the same at every path). Every weight of `model` stays as it is."""
    layers = {}
    for path in paths:
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        layer = BottleneckAdapter(getattr(parent, child), sizes, activation)
        setattr(parent, child, layer)
        layers[path] = layer
    return layers


def reset_bottleneck(layers: dict[str, BottleneckAdapter], n: int, seed: int) -> None:
    """Initialise adapter n of every layer from its own seed, in module order (so its draws are fixed)."""
    gen = torch.Generator().manual_seed(seed)
    for layer in layers.values():
        layer.reset_adapter(n, gen)
