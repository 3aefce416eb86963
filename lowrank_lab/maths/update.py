"""The value object of one adapted matrix: ΔW = scaling·B·A (Hu et al. 2021, §4.1), its SVD cached.

In the spirit of TransformerLens' FactoredMatrix: an update knows its factors A (r×k) and B (d×r) and
its scaling, computes ΔW (d×k) only when asked, and its SVD from the factors, never from d×k."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import Tensor

from lowrank_lab.maths.linalg import delta_w, factored_svd


@dataclass(frozen=True)
class LowRankUpdate:
    """One adapted matrix: ΔW = scaling·B·A with A (r×k), B (d×r), as stored by PEFT.

    kind says what ΔW is: "lora" (scaling·B·A); "lora-minus-init" (a base-mutating init such as
    PiSSA, against the original W0: still scaling·B·A, of rank 2r); "dora" (A, B hold only the
    direction, the effective ΔW is dense: ``adapters.ExternalAdapter.dense_delta``)."""

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

    def delta_w(self) -> Tensor:
        """ΔW = scaling·B·A, d×k (out×in, whatever the module stores), in the factors' dtype."""
        return delta_w(self.A, self.B, self.scaling)

    @functools.cached_property
    def _svd(self) -> tuple[Tensor, Tensor, Tensor]:
        return factored_svd(self.A, self.B, self.scaling)

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD of ΔW = U·diag(S)·Vh from the factors (QR of B and Aᵀ, SVD of the r×r core):
        U d×r, S r (descending), Vh r×k, in the factors' dtype (at least float32). Computed once per update."""
        return self._svd
