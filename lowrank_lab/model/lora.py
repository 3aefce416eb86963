"""The LoRA layer: h = W0·x + scaling·B·A·x, for K adapters trained together in one forward pass.

Hu et al. 2021, §4.1, Eq. 3. One ``LoRALinear`` wraps a frozen ``nn.Linear`` (W0 stored
d×k, out×in) or a GPT-2 ``Conv1D`` (W0ᵀ stored k×d) and holds K adapters at once::

    x ─┬─ W0 ─────────────────────────────┐
       └─ dropout ─ A_k (r_k×k) ─ B_k (d×r_k) ─ ×scaling_k ─ (+) ─ h

The batch dimension carries the adapter index: rows [n·b, (n+1)·b) of the input belong to
adapter n (mLoRA's BatchLoRA pattern), so one frozen base serves a whole rank sweep. Ranks
may differ: A and B are stored zero-padded to r_max, and because the padded rows of A and
columns of B start at zero, their gradients are exactly zero and AdamW keeps them at zero, so
adapter n stays exactly rank r_n. A rank of 0 means "this adapter does not adapt this matrix".
With K = 1 this is the ordinary LoRA layer, and ``merge`` folds ΔW into W0.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lowrank_lab.maths.linalg import delta_w

from lowrank_lab.model.base import Conv1D  # GPT-2's Conv1D stores its weight in×out (k×d)


def init_A(r: int, k: int, scheme: str, generator: torch.Generator) -> Tensor:
    """Initial A (r×k). "kaiming": U(−1/√k, 1/√k), i.e. kaiming_uniform(a=√5) as loralib and PEFT
    do; "gaussian": N(0, 1/r²) as PEFT's init_lora_weights="gaussian". B starts at 0 either way,
    so ΔW = 0 and the model is unchanged at initialisation (§4.1)."""
    if scheme == "kaiming":
        bound = 1.0 / math.sqrt(k)
        return (torch.rand(r, k, generator=generator, dtype=torch.float64) * 2 - 1).mul_(bound).float()
    if scheme == "gaussian":
        return (torch.randn(r, k, generator=generator, dtype=torch.float64) / r).float()
    raise ValueError(f"init={scheme!r}: use 'kaiming' or 'gaussian'")


def init_generator(seed: int, r: int, label: str) -> torch.Generator:
    """The generator of one module's initial A: seeded by (cell seed, rank, module label) through
    SHA-256, so every module of every cell draws its own stream.

    One generator per cell drawing each module's A in turn gave layer 0's first module of the
    r = 8 and r = 64 cells of a seed the same first 8 rows (φ = 1 at step 0, where independent
    subspaces give max(i, j)/k); a generator per (seed, label) alone would do the same in every
    module, hence the rank in the key. Cells that differ only in their learning rate, α or target
    set share a module's initial A, so they are compared from one start."""
    digest = hashlib.sha256(f"lora-A/seed={int(seed)}/r={int(r)}/{label}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def base_shape(base: nn.Module) -> tuple[int, int]:
    """(d, k) = (out_features, in_features) of an nn.Linear or a GPT-2 Conv1D."""
    if isinstance(base, nn.Linear):
        return base.out_features, base.in_features
    if isinstance(base, Conv1D):
        return base.weight.shape[1], base.weight.shape[0]
    raise TypeError(f"LoRA wraps nn.Linear or GPT-2 Conv1D, not {type(base).__name__}")


def weight_as_W0(base: nn.Module) -> Tensor:
    """The frozen weight in the paper's d×k (out×in) layout, whatever the module stores."""
    W = base.weight
    return W.mT if isinstance(base, Conv1D) else W


class LoRALinear(nn.Module):
    """K LoRA adapters on one frozen linear map; adapter n has rank ``ranks[n]`` (0 = none)."""

    def __init__(self, base: nn.Module, ranks: Sequence[int], scalings: Sequence[float], dropout: float = 0.0):
        super().__init__()
        if len(ranks) != len(scalings) or not ranks:
            raise ValueError("LoRALinear: give one rank and one scaling per adapter")
        self.d, self.k = base_shape(base)
        if max(ranks) > min(self.d, self.k):
            raise ValueError(f"LoRA rank {max(ranks)} exceeds min(d, k) = {min(self.d, self.k)}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.ranks = tuple(int(r) for r in ranks)
        r_max = max(max(self.ranks), 1)
        dtype = base.weight.dtype
        self.A = nn.Parameter(torch.zeros(len(ranks), r_max, self.k, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(len(ranks), self.d, r_max, dtype=dtype))
        self.register_buffer("scaling", torch.tensor(list(scalings), dtype=torch.float32))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def fan_in_fan_out(self) -> bool:
        """True when the base stores W0ᵀ (GPT-2's Conv1D), as PEFT's config says it."""
        return bool(Conv1D) and isinstance(self.base, Conv1D)

    @property
    def n_adapters(self) -> int:
        return len(self.ranks)

    @torch.no_grad()
    def reset_adapter(self, n: int, scheme: str, generator: torch.Generator) -> None:
        """Draw A_n from `scheme` (padding rows stay 0) and set B_n = 0."""
        self.A[n].zero_()
        self.B[n].zero_()
        r = self.ranks[n]
        if r:
            self.A[n, :r] = init_A(r, self.k, scheme, generator).to(self.A.dtype)

    def factors(self, n: int) -> tuple[Tensor, Tensor, float]:
        """(A (r×k), B (d×r), scaling) of adapter n, without the padding."""
        r = self.ranks[n]
        return self.A[n, :r], self.B[n, :, :r], float(self.scaling[n])

    def forward(self, x: Tensor) -> Tensor:
        h = self.base(x)
        if self.merged:
            return h
        K = self.n_adapters
        xs = self.dropout(x).reshape(K, -1, self.k)
        # (K, N, k) @ (K, k, r) @ (K, r, d): two thin batched products, ΔW is never formed.
        z = torch.bmm(torch.bmm(xs, self.A.mT.to(xs.dtype)), self.B.mT.to(xs.dtype))
        z = z * self.scaling.to(z.dtype)[:, None, None]
        return h + z.reshape(h.shape)

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← W0 + ΔW (single adapter only); the forward then runs the plain base layer."""
        if self.n_adapters != 1:
            raise RuntimeError("merge needs exactly one adapter in the layer")
        if not self.merged:
            self._add_delta(+1.0)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge``: W0 ← W0 − ΔW."""
        if self.merged:
            self._add_delta(-1.0)
            self.merged = False

    def _add_delta(self, sign: float) -> None:
        A, B, scaling = self.factors(0)
        dW = delta_w(A.double(), B.double(), sign * scaling)
        W0 = weight_as_W0(self.base)
        W0.copy_((W0.double() + dW).to(W0.dtype))


class PackedLinear(nn.Module):
    """K independent linear heads y_n = W_n·x + b_n; rows [n·b, (n+1)·b) go to head n."""

    def __init__(self, n_adapters: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_adapters, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(n_adapters, out_features))

    @torch.no_grad()
    def reset_head(self, n: int, generator: torch.Generator) -> None:
        """nn.Linear's default init: U(−1/√in, 1/√in) for weight and bias, from `generator`."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        for p in (self.weight[n], self.bias[n]):
            p.copy_((torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)

    def forward(self, x: Tensor) -> Tensor:
        K = self.weight.shape[0]
        xs = x.reshape(K, -1, x.shape[-1])
        y = torch.baddbmm(self.bias[:, None, :].to(xs.dtype), xs, self.weight.mT.to(xs.dtype))
        return y.reshape(-1, y.shape[-1])


def inject(model: nn.Module, paths: Sequence[str], ranks: Sequence[Sequence[int]],
           scalings: Sequence[float], dropout: float = 0.0) -> dict[str, LoRALinear]:
    """Replace each module at `paths[i]` with a LoRALinear holding K adapters of ranks
    ``ranks[i]`` (one entry per adapter). W0 and every other weight of `model` stay as they are."""
    layers = {}
    for path, module_ranks in zip(paths, ranks, strict=True):
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        layer = LoRALinear(getattr(parent, child), module_ranks, scalings, dropout)
        setattr(parent, child, layer)
        layers[path] = layer
    return layers
