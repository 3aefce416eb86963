"""The value objects of one adapted matrix: the update ΔW it applies, with its SVD cached per dtype.

In the spirit of TransformerLens' FactoredMatrix. Every analysis takes an update and asks it for
what it needs; no caller unpacks factors or branches on the kind of update:

- ``LowRankUpdate``: ΔW = scaling·B·A (Hu et al. 2021, §4.1) with A (r×k), B (d×r). ΔW (d×k) is
  formed only when asked for; its SVD comes from the factors, never from d×k.
- ``DenseUpdate``: a ΔW that has no low-rank factors (DoRA's W' − W0, full fine-tuning's
  W_ft − W0), d×k, with the rank r its analyses compare at (the adapter's r for DoRA).

Both answer the same questions: ``r``, ``shape`` (d, k), ``delta_w()``, ``svd(dtype)`` (the top-r
singular triplets), ``singular_values(dtype)`` (the whole spectrum: r values for LoRA, min(d, k)
for a dense update), ``norm()`` = ‖ΔW‖_F, ``basis(side)`` (the singular basis φ compares) and
``factors()`` (a product form B'·A' = ΔW for the exact two-update maths of ``linalg``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lowrank_lab.maths.linalg import delta_w, factored_svd, top_left_basis, top_right_basis

# The singular bases φ compares (Hu et al. 2021, Sec. 7.2; footnote 7; App. H.3).
SIDES = ("A", "B", "dW_right", "dW_left")
INPUT_SIDES = ("A", "dW_right")  # bases in ℝᵏ (what the update reads); the others live in ℝᵈ


def check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side={side!r}: use one of {', '.join(SIDES)}")
    return side


class _Cached:
    """A per-(method, arguments) cache on a frozen dataclass: SVDs are computed once per dtype."""

    def _cache(self, key, compute: Callable[[], object]):
        store = self.__dict__.setdefault("_memo", {})
        if key not in store:
            store[key] = compute()
        return store[key]


@dataclass(frozen=True, eq=False)
class LowRankUpdate(_Cached):
    """One adapted matrix: ΔW = scaling·B·A with A (r×k), B (d×r), as stored by PEFT.

    kind says where the factors come from, for the tables: "lora" (scaling·B·A), or
    "lora-minus-init" (a base-mutating init such as PiSSA, against the original W0: still
    scaling·B·A, of rank 2r). The maths is the same for both."""

    label: str
    path: str
    A: Tensor
    B: Tensor
    scaling: float
    fan_in_fan_out: bool = False
    kind: str = "lora"

    @property
    def r(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(d, k) of ΔW, out×in."""
        return self.B.shape[0], self.A.shape[1]

    def delta_w(self, dtype: torch.dtype | None = None) -> Tensor:
        """ΔW = scaling·B·A, d×k (out×in), in `dtype` (default: the factors' dtype)."""
        A, B = (self.A, self.B) if dtype is None else (self.A.to(dtype), self.B.to(dtype))
        return delta_w(A, B, self.scaling)

    def svd(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD of ΔW = U·diag(S)·Vh from the factors (QR of B and Aᵀ, SVD of the r×r core):
        U d×r, S (r,) descending, Vh r×k, in `dtype` (default the factors', at least float32)."""
        return self._cache(("svd", dtype), lambda: factored_svd(self.A, self.B, self.scaling, dtype=dtype))

    def singular_values(self, dtype: torch.dtype | None = torch.float64) -> Tensor:
        """σ_1 ≥ … ≥ σ_r of ΔW (scaling included), from the factors."""
        return self.svd(dtype)[1]

    def norm(self, dtype: torch.dtype | None = torch.float64) -> Tensor:
        """‖ΔW‖_F = sqrt(Σ σ²), scaling included."""
        return torch.linalg.vector_norm(self.singular_values(dtype))

    def basis(self, side: str = "A") -> Tensor:
        """Orthonormal columns in float64, by descending σ, of the singular basis on `side`:
        "A" right of A (k×r, the paper's U_A of Sec. 7.2); "B" left of B (d×r, footnote 7);
        "dW_right" / "dW_left" ΔW's Vh.mT (k×r) / U (d×r)."""

        def compute() -> Tensor:
            if side == "A":
                return top_right_basis(self.A, dtype=torch.float64)
            if side == "B":
                return top_left_basis(self.B, dtype=torch.float64)
            U, _, Vh = self.svd(torch.float64)
            return Vh.mT if side == "dW_right" else U

        return self._cache(("basis", check_side(side)), compute)

    def factors(self) -> tuple[Tensor, Tensor, float]:
        """(B, A, scaling) with ΔW = scaling·B·A: the product form of ``distances.frobenius_inner``."""
        return self.B, self.A, self.scaling

    def truncated(self, n: int) -> LowRankUpdate:
        """The best rank-n approximation of ΔW (Eckart & Young 1936) as an update of rank n:
        A = Vh[:n], B = U[:, :n]·diag(S[:n]) / scaling, in float64."""
        U, S, Vh = self.svd(torch.float64)
        return LowRankUpdate(self.label, self.path, Vh[:n].clone(), (U[:, :n] * S[:n]) / self.scaling,
                             self.scaling, self.fan_in_fan_out, self.kind)


@dataclass(frozen=True, eq=False)
class DenseUpdate(_Cached):
    """A dense update ΔW (d×k, out×in) with no low-rank factors: DoRA's W' − W0, or full
    fine-tuning's W_ft − W0. `dense` is the matrix or a function computing it on demand (DoRA's
    reads W0). r is the rank its analyses compare at: the top-r singular directions serve φ and
    Table 7 (for DoRA, the adapter's r), the whole spectrum serves spectra and norms."""

    label: str
    path: str
    dense: Tensor | Callable[[], Tensor] = field(repr=False)
    r: int
    kind: str = "dora"
    scaling: float = 1.0  # reported only: DoRA's α/r of its directional factors; 1 for full fine-tuning

    def delta_w(self, dtype: torch.dtype | None = None) -> Tensor:
        D = self.dense() if callable(self.dense) else self.dense
        return D if dtype is None else D.to(dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.delta_w().shape)

    def _full_svd(self, dtype: torch.dtype | None) -> tuple[Tensor, Tensor, Tensor]:
        def compute():
            D = self.delta_w()
            return torch.linalg.svd(D.to(dtype or torch.promote_types(D.dtype, torch.float32)), full_matrices=False)

        return self._cache(("full_svd", dtype), compute)

    def svd(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Top-r U (d×r), S (r,), Vh (r×k) of the dense ΔW (a dense thin SVD)."""

        def compute():
            U, S, Vh = self._full_svd(dtype)
            self._cache(("svdvals", dtype), lambda: S)
            return U[:, :self.r], S[:self.r], Vh[:self.r]

        return self._cache(("svd", dtype), compute)

    def singular_values(self, dtype: torch.dtype | None = torch.float64) -> Tensor:
        """All min(d, k) singular values of the dense ΔW."""
        return self._cache(("svdvals", dtype), lambda: torch.linalg.svdvals(self.delta_w(dtype)))

    def norm(self, dtype: torch.dtype | None = torch.float64) -> Tensor:
        """‖ΔW‖_F of the whole dense update (not of its top-r part)."""
        return torch.linalg.matrix_norm(self.delta_w(dtype))

    def basis(self, side: str = "A") -> Tensor:
        """The top-r singular directions of the dense ΔW in float64: right ones (k×r) for the
        input sides A and dW_right, left ones (d×r) for B and dW_left. A dense update has no A
        and B of its own; these are the A and B of its best rank-r approximation."""
        U, _, Vh = self.svd(torch.float64)
        return Vh.mT if check_side(side) in INPUT_SIDES else U

    def factors(self) -> tuple[Tensor, Tensor, float]:
        """(U·diag(S), Vh, 1) of the full thin SVD: ΔW exactly, as a product."""
        U, S, Vh = self._full_svd(torch.float64)
        return U * S, Vh, 1.0


Update = LowRankUpdate | DenseUpdate
