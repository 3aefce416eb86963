"""Edits of a weight update as exact factors: ΔW truncated to its best rank k (Eckart–Young), and
intruder directions scaled by λ (Shuttleworth et al. 2024). Every edit comes back as (A', B') with
ΔW' = B'·A' (scaling 1), so a packed LoRA layer evaluates it without forming d×k. Only torch.

Intruder dimensions, two definitions (both named in every table):
- "W0+dW" (Shuttleworth et al. 2024, arXiv:2410.21228): the top-`top_k` left singular vectors y_j
  of W_tuned = W0 + ΔW whose max_i |⟨y_j, x_i⟩| over all left singular vectors x_i of W0 is
  below ε. Scaling them by λ: W_λ = W_tuned − (1 − λ)·Σ_j σ_j·y_j·z_jᵀ, (σ_j, y_j, z_j) W_tuned's
  singular triplets, i.e. those singular values times λ and the rest of W_tuned unchanged.
- "dW": the same test on the top-`top_k` left singular vectors of ΔW alone (from the factors);
  ΔW_λ = ΔW − (1 − λ)·Σ_j σ_j·u_j·v_jᵀ over ΔW's intruder triplets.
Either way ΔW_λ = [scaling·B, −(1 − λ)·U_J·diag(σ_J)]·[A; Vh_J], rank ≤ r + |J|.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lowrank_lab.maths.linalg import delta_w, factored_svd

DEFINITIONS = ("W0+dW", "dW")


def truncated_factors(A: Tensor, B: Tensor, scaling: float, k: int) -> tuple[Tensor, Tensor]:
    """(A_k (k×in), B_k (d×k)) with B_k·A_k = U[:, :k]·diag(S[:k])·Vh[:k], the best rank-k
    approximation of ΔW = scaling·B·A in every unitarily invariant norm (Eckart & Young 1936);
    the SVD from the factors (``linalg.factored_svd``), float64. k = 0 gives empty factors (ΔW_0 = 0);
    k ≥ r gives ΔW itself (to rounding)."""
    return svd_truncated_factors(*factored_svd(A, B, scaling, dtype=torch.float64), k)


def dense_truncated_factors(D: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``truncated_factors`` of a dense update D (d×in), e.g. full fine-tuning's W_ft − W0."""
    return svd_truncated_factors(*torch.linalg.svd(D.to(torch.float64), full_matrices=False), k)


def svd_truncated_factors(U: Tensor, S: Tensor, Vh: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(Vh[:k], U[:, :k]·diag(S[:k])) of a thin SVD U·diag(S)·Vh (S descending): its rank-k truncation."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = min(k, S.shape[-1])
    return Vh[:k].clone(), U[:, :k] * S[:k]


def intruder_triplets(W0: Tensor, A: Tensor, B: Tensor, scaling: float, definition: str = "W0+dW",
                      top_k: int = 10, epsilon: float = 0.5, U_w0: Tensor | None = None) -> dict[str, Tensor]:
    """The intruder singular triplets of W0 + ΔW ("W0+dW") or of ΔW ("dW") against W0 (module
    docstring): U (d×n), S (n,), Vh (n×in) of the n intruders, their indices among the top_k and
    max_cos (top_k,) of every candidate. float64; W0 d×in; U_w0, W0's left singular vectors, spares its SVD."""
    if definition not in DEFINITIONS:
        raise ValueError(f"definition={definition!r}: use one of {', '.join(DEFINITIONS)}")
    W0 = W0.to(torch.float64)
    if U_w0 is None:
        U_w0 = torch.linalg.svd(W0, full_matrices=False)[0]
    if definition == "W0+dW":
        U, S, Vh = torch.linalg.svd(W0 + delta_w(A.double(), B.double(), scaling), full_matrices=False)
    else:
        U, S, Vh = factored_svd(A, B, scaling, dtype=torch.float64)
        S_pos = S > 0  # a zero σ has no direction (ΔW at init): never an intruder
        U, S, Vh = U[:, S_pos], S[S_pos], Vh[S_pos]
    n = min(top_k, S.shape[0])
    max_cos = (U[:, :n].mT @ U_w0.to(torch.float64)).abs().amax(dim=-1)
    index = torch.nonzero(max_cos < epsilon).flatten()
    return {"U": U[:, index], "S": S[index], "Vh": Vh[index], "index": index, "max_cos": max_cos}


def scaled_intruder_factors(A: Tensor, B: Tensor, scaling: float, triplets: dict[str, Tensor],
                            lam: float) -> tuple[Tensor, Tensor]:
    """(A', B') with B'·A' = scaling·B·A − (1 − λ)·U_J·diag(S_J)·Vh_J for the intruder `triplets`
    (``intruder_triplets``): λ = 1 is the adapter, λ = 0 removes the intruder directions."""
    A_ = torch.cat([A.to(torch.float64), triplets["Vh"]])
    B_ = torch.cat([scaling * B.to(torch.float64), -(1.0 - lam) * triplets["U"] * triplets["S"]], dim=1)
    return A_, B_
