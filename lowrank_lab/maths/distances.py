"""Two updates compared exactly from their factors: ⟨ΔW1, ΔW2⟩_F, ‖ΔW1 − ΔW2‖ and the cosine.

Hu et al. 2021, Sec. 7.2 compares two seeds or two ranks through their subspaces; these say how
far apart the updates themselves are, never forming d×k for a low-rank update.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lowrank_lab.maths.linalg import Update, factored_svd, upcast


def frobenius_inner_factors(A1: Tensor, B1: Tensor, s1: float, A2: Tensor, B2: Tensor, s2: float) -> float:
    """⟨ΔW1, ΔW2⟩_F = s1·s2·tr(A1ᵀB1ᵀB2A2) = s1·s2·Σ (B1ᵀB2) ∘ (A1A2ᵀ), in float64.

    A_i (r_i×k), B_i (d×r_i), ΔW_i = s_i·B_i·A_i; only r1×r2 products are formed, O((d+k)·r1·r2)."""
    A1, B1, A2, B2 = upcast(A1, B1, A2, B2, dtype=torch.float64)
    return float(s1 * s2 * ((B1.mT @ B2) * (A1 @ A2.mT)).sum())


def frobenius_inner(u1: Update, u2: Update) -> float:
    """⟨ΔW1, ΔW2⟩_F of two updates from their product forms (``update.factors()``), never d×k.

    The cosine ⟨ΔW1, ΔW2⟩/(‖ΔW1‖‖ΔW2‖) says whether two updates push W0 the same way
    (Hu et al. 2021, Sec. 7 compares updates only through their subspaces; this adds the sign)."""
    (B1, A1, s1), (B2, A2, s2) = u1.factors(), u2.factors()
    return frobenius_inner_factors(A1, B1, s1, A2, B2, s2)


def delta_distance(u1: Update, u2: Update) -> dict[str, float]:
    """‖ΔW1 − ΔW2‖_F, ‖ΔW1 − ΔW2‖_2 and the cosine of two updates of the same d×k.

    With ΔW_i = s_i·B_i·A_i (``update.factors()``; a dense update gives its full SVD as the
    product), ΔW1 − ΔW2 = [s1·B1, −s2·B2]·[A1; A2] has rank ≤ r1 + r2, so its singular values come
    from `factored_svd` of the stacked factors, O((d+k)(r1+r2)²), never d×k. Through QR, not
    through ‖ΔW1‖² + ‖ΔW2‖² − 2⟨ΔW1, ΔW2⟩, which cancels catastrophically when ΔW1 ≈ ΔW2.
    Returns frobenius, spectral, relative_frobenius (÷ ‖ΔW1‖_F, inf when ΔW1 = 0) and cosine
    (0 when either is 0). Hu et al. 2021, Sec. 7.2 (two seeds, two ranks)."""
    if tuple(u1.shape) != tuple(u2.shape):
        raise ValueError(f"ΔW1 is {u1.shape[0]}×{u1.shape[1]} but ΔW2 is {u2.shape[0]}×{u2.shape[1]}")
    (B1, A1, s1), (B2, A2, s2) = u1.factors(), u2.factors()
    A1, B1, A2, B2 = upcast(A1, B1, A2, B2, dtype=torch.float64)
    _, S, _ = factored_svd(torch.cat([A1, A2]), torch.cat([s1 * B1, -s2 * B2], dim=1))
    n1 = math.sqrt(max(frobenius_inner_factors(A1, B1, s1, A1, B1, s1), 0.0))
    n2 = math.sqrt(max(frobenius_inner_factors(A2, B2, s2, A2, B2, s2), 0.0))
    inner = frobenius_inner_factors(A1, B1, s1, A2, B2, s2)
    fro = float(torch.linalg.vector_norm(S))
    return {"frobenius": fro, "spectral": float(S[0]),
            "relative_frobenius": fro / n1 if n1 > 0 else math.inf,
            "cosine": inner / (n1 * n2) if n1 > 0 and n2 > 0 else 0.0}


def inner_with_dense(update: Update, D: Tensor) -> float:
    """⟨ΔW, D⟩_F = s·⟨BᵀD, A⟩ for ΔW = s·B·A (``update.factors()``) and a dense D (d×k), in
    float64, forming only the r×k product BᵀD, never B·A (Eckart–Young's LoRA points)."""
    B, A, s = update.factors()
    B, A, D = upcast(B, A, D, dtype=torch.float64)
    return s * float(((B.mT @ D) * A).sum())
