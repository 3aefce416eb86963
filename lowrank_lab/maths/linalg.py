"""Pure tensor maths for LoRA's low-rank updates ΔW = scaling·B·A.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.

Conventions:
- W0 is the frozen weight, d×k, stored (out, in) as nn.Linear stores it.
- A is r×k, B is d×r, scaling = α/r (or α/√r), delta_w = scaling·B·A.
- SVD outputs are U, S, Vh exactly as torch.linalg.svd returns them: M = U·diag(S)·Vh with S
  descending. Right singular vectors as columns are V = Vh.mT; every name says which it holds.

Numerics: LAPACK has no half-precision QR/SVD and fp16 loses small singular values, so every
decomposition first upcasts to at least float32, or to the `dtype` the caller asks for (float64 for
tests and tables). ΔW is never materialised here except by `delta_w`, on explicit request.
Only torch is imported: no I/O, printing, plotting or nn.Module.
"""

from __future__ import annotations

import functools
import math
from typing import Protocol

import torch
from torch import Tensor


class Update(Protocol):
    """What the maths of one or two updates reads of ``maths.update``'s value objects (which are
    built on this module, so it names them only by what they answer)."""

    r: int
    shape: tuple[int, int]

    def svd(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]: ...
    def norm(self, dtype: torch.dtype | None = torch.float64) -> Tensor: ...
    def factors(self) -> tuple[Tensor, Tensor, float]: ...

_SCALING_RULES = {
    "alpha/r": lambda alpha, r: alpha / r,  # Hu et al. 2021, Sec. 4.1
    "alpha/sqrt(r)": lambda alpha, r: alpha / math.sqrt(r),  # rsLoRA, Kalajdzievski 2023
}


def upcast(*tensors: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, ...]:
    """Cast to `dtype`, or to the inputs' promoted dtype but never below float32."""
    if dtype is None:
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors], torch.float32)
    return tuple(t.to(dtype) for t in tensors)


# --- the update ΔW -----------------------------------------------------------------------------


def scaling_factor(alpha: float, r: int, rule: str = "alpha/r") -> float:
    """Multiplier applied to B·A: α/r (rule "alpha/r") or α/√r (rule "alpha/sqrt(r)", rsLoRA).

    Hu et al. 2021, Sec. 4.1; Kalajdzievski 2023 (arXiv:2312.03732) for α/√r.
    Dividing by r lets α stay fixed while r is swept; √r keeps updates Θ(1) as r grows.
    """
    if rule not in _SCALING_RULES:
        raise ValueError(f"unknown scaling rule {rule!r}; expected one of {sorted(_SCALING_RULES)}")
    if r <= 0:
        raise ValueError(f"r must be a positive integer, got r={r}")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got alpha={alpha}")
    return float(_SCALING_RULES[rule](alpha, r))


def delta_w(A: Tensor, B: Tensor, scaling: float) -> Tensor:
    """Dense update ΔW = scaling·B·A, shape (..., d, k) from A (..., r, k) and B (..., d, r).

    Hu et al. 2021, Sec. 4.1, Eq. 3. The one place in lowrank_lab that forms the d×k product:
    call it only on explicit request (merging, tests, benchmarks); analyses use `factored_svd`.
    Keeps the input dtype, since merging must not change W0's precision.
    """
    _check_rank(A, B)
    return scaling * (B @ A)


def _check_rank(A: Tensor, B: Tensor) -> None:
    if A.shape[-2] != B.shape[-1]:
        raise ValueError(f"rank mismatch: A has r={A.shape[-2]} rows, B has r={B.shape[-1]} cols")


def factored_svd(
    A: Tensor, B: Tensor, scaling: float = 1.0, *, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact thin SVD of ΔW = scaling·B·A computed from the factors, never forming d×k.

    B = Q_B·R_B, Aᵀ = Q_A·R_A (reduced QR)  ⇒  ΔW = Q_B·(scaling·R_B·R_Aᵀ)·Q_Aᵀ;
    |scaling|·R_B·R_Aᵀ = Uc·diag(S)·Vhc (r×r SVD)  ⇒  U = sign(scaling)·Q_B·Uc,  Vh = Vhc·Q_Aᵀ.

    Shapes: A (..., r, k), B (..., d, r) → U (..., d, p), S (..., p), Vh (..., p, k),
    p = min(r, d, k) (= r for LoRA). S is descending and non-negative; if rank(ΔW) < r the trailing
    S are 0 and their U/Vh columns are arbitrary orthonormal directions.
    Cost O((d+k)·r²) instead of O(d·k·min(d, k)).
    Hu et al. 2021, Sec. 7 (every ΔW analysis).
    The r-dimensional column and row spaces of ΔW are known from B and A, so only an r×r matrix
    needs a real SVD. Computed in `dtype` (default: input dtype, at least float32).
    """
    _check_rank(A, B)
    A, B = upcast(A, B, dtype=dtype)
    # QR first: it is backward stable and makes the outer factors orthonormal, so the SVD of the
    # core inherits full accuracy; the Gram-matrix route (BᵀB) would square the condition number.
    Q_B, R_B = torch.linalg.qr(B)
    Q_A, R_A = torch.linalg.qr(A.mT)
    core = abs(scaling) * (R_B @ R_A.mT)
    Uc, S, Vhc = torch.linalg.svd(core, full_matrices=False)
    # A negative scaling flips ΔW; putting the sign in U keeps S ≥ 0 and Vh as for +|scaling|.
    U = math.copysign(1.0, scaling) * (Q_B @ Uc)
    Vh = Vhc @ Q_A.mT
    return U, S, Vh


# --- singular bases and subspace similarity ----------------------------------------------------


def top_right_basis(M: Tensor, n: int | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
    """V = Vh[:n].mT: top-n right singular vectors of M (..., r, k) as columns, shape (..., k, n).

    M = U·diag(S)·Vh; orthonormal columns ordered by descending σ; n defaults to min(r, k).
    Hu et al. 2021, Sec. 7.2 (U_A in Eq. 4 is this V for A stored r×k; App. G calls it "left").
    For a LoRA A these are the input directions in ℝᵏ the adapter reads from.
    """
    (M,) = upcast(M, dtype=dtype)
    n = _check_n(M, n)
    _, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return Vh[..., :n, :].mT


def top_left_basis(M: Tensor, n: int | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
    """U[:, :n]: the top-n left singular vectors of M (..., d, m) as columns, shape (..., d, n).

    M = U·diag(S)·Vh; columns ordered by descending singular value; n defaults to min(d, m).
    Hu et al. 2021, Sec. 7.2 footnote 7 (B's left singular vectors), App. H.3 (W0 vs ΔW).
    For B or W0 these are the output directions in ℝᵈ the matrix writes to.
    """
    (M,) = upcast(M, dtype=dtype)
    n = _check_n(M, n)
    U, _, _ = torch.linalg.svd(M, full_matrices=False)  # thin: never d×d for a large dense W0
    return U[..., :, :n]


def _check_n(M: Tensor, n: int | None) -> int:
    p = min(M.shape[-2], M.shape[-1])
    if n is None:
        return p
    if not 1 <= n <= p:
        raise ValueError(f"n must be in [1, {p}] for a matrix of shape {tuple(M.shape)}, got n={n}")
    return n


def phi_grid(V1: Tensor, V2: Tensor) -> Tensor:
    """Grid φ[i-1, j-1] = ‖V1[:, :i]ᵀ·V2[:, :j]‖_F² / min(i, j) for all 1 ≤ i ≤ r1, 1 ≤ j ≤ r2.

    V1 (..., k, r1), V2 (..., k, r2): orthonormal columns ordered by singular value → (..., r1, r2).
    Hu et al. 2021, Sec. 7.2, Eq. 4 and App. G. φ ∈ [0, 1]: 1 when the smaller subspace lies inside
    the larger one, 0 when they are orthogonal.
    Every top-left block norm is a 2-D prefix sum of the squared entries of the one product V1ᵀV2.
    """
    V1, V2 = upcast(V1, V2)
    sq = (V1.mT @ V2).square()
    block = sq.cumsum(dim=-2).cumsum(dim=-1)
    i = torch.arange(1, sq.shape[-2] + 1, dtype=sq.dtype, device=sq.device)
    j = torch.arange(1, sq.shape[-1] + 1, dtype=sq.dtype, device=sq.device)
    # Rounding can push a full overlap to 1 + ε; φ cannot exceed 1.
    return (block / torch.minimum(i[:, None], j[None, :])).clamp(max=1.0)


def subspace_similarity(
    A1: Tensor, A2: Tensor, i: int, j: int, *, dtype: torch.dtype | None = None
) -> float:
    """Overlap of the top-i / top-j right-singular subspaces of A1 (r1×k) and A2 (r2×k).

    φ(A1, A2, i, j) = ‖V1[:, :i]ᵀ·V2[:, :j]‖_F² / min(i, j) ∈ [0, 1], V = Vh.mT of each A
    (Hu et al. 2021, Sec. 7.2, Eq. 4),
    = phi_grid(top_right_basis(A1), top_right_basis(A2))[i-1, j-1].
    Right, not left, singular vectors: φ is unchanged by any orthogonal mixing Q·A of A's rows.
    Directions beyond rank(A) are arbitrary, so ask only for i ≤ rank(A1), j ≤ rank(A2).
    """
    V1 = top_right_basis(A1, i, dtype=dtype)
    V2 = top_right_basis(A2, j, dtype=dtype)
    return float(phi_grid(V1, V2)[-1, -1])


def _cosines(V1: Tensor, V2: Tensor) -> Tensor:
    V1, V2 = upcast(V1, V2)
    return torch.linalg.svdvals(V1.mT @ V2).clamp(0.0, 1.0)


def principal_angles(V1: Tensor, V2: Tensor) -> Tensor:
    """Principal angles θ (radians, ascending) between span(V1) and span(V2).

    cos θ_l = σ_l(V1ᵀ·V2) clamped to [0, 1];
    V1 (..., k, r1), V2 (..., k, r2) orthonormal → θ (..., p), p = min(r1, r2).
    Hu et al. 2021, App. G (φ is built on them); Björck & Golub 1973.
    0 means a shared direction, π/2 an orthogonal one. arccos is ill-conditioned near 0, so angles
    below about √ε (≈1e-8 in float64) come out as ≈1e-8 rather than exactly 0.
    """
    return torch.arccos(_cosines(V1, V2))


def grassmann_distance(V1: Tensor, V2: Tensor) -> Tensor:
    """Geodesic (arc-length) Grassmann distance ‖θ‖₂ = sqrt(Σ θ_l²) over the principal angles.

    V1 (..., k, r1), V2 (..., k, r2) orthonormal → (...). Hu et al. 2021, Sec. 7.2 and App. G.
    The length of the shortest rotation taking one subspace onto the other.
    """
    return torch.linalg.vector_norm(principal_angles(V1, V2), dim=-1)


def projection_distance(V1: Tensor, V2: Tensor) -> Tensor:
    """Projection metric d = sqrt(p − Σ cos²θ_l) ∈ [0, √p], p = min(r1, r2) (Ham & Lee 2008).

    V1 (..., k, r1), V2 (..., k, r2) orthonormal → (...). Hu et al. 2021, App. G: φ = 1 − d²/p,
    i.e. φ is this metric turned into a normalised similarity.
    """
    cos = _cosines(V1, V2)
    return (cos.shape[-1] - cos.square().sum(dim=-1)).clamp(min=0.0).sqrt()


# --- random baselines --------------------------------------------------------------------------


def random_orthonormal(
    k: int, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Haar-random k×n matrix with orthonormal columns: G = Q·R for Gaussian G, Q·sign(diag(R)).

    Hu et al. 2021, Sec. 7.2 Fig. 4 and Sec. 7.3 Table 7 ("random" baselines).
    Without the sign fix Q would follow LAPACK's sign convention and not be Haar-distributed.
    """
    if not 1 <= n <= k:
        raise ValueError(f"need 1 <= n <= k, got k={k}, n={n}")
    G = torch.randn(k, n, generator=generator, dtype=dtype)
    Q, R = torch.linalg.qr(G)
    return Q * torch.where(torch.diagonal(R) < 0, -1.0, 1.0).to(dtype)


def random_phi_expected(r1: int, r2: int, k: int) -> Tensor:
    """Analytic mean grid E[φ](i, j) = max(i, j)/k for independent Haar subspaces of ℝᵏ, r1×r2.

    E‖V1[:, :i]ᵀ·V2[:, :j]‖_F² = i·j/k (each of the i·j entries has variance 1/k), and i·j/min(i, j)
    = max(i, j). Hu et al. 2021, Sec. 7.2 Fig. 4: what "no shared directions" looks like.
    """
    i = torch.arange(1, r1 + 1, dtype=torch.float64)
    j = torch.arange(1, r2 + 1, dtype=torch.float64)
    return torch.maximum(i[:, None], j[None, :]) / k


def random_phi_monte_carlo(
    r1: int, r2: int, k: int, n_samples: int = 100, generator: torch.Generator | None = None
) -> Tensor:
    """Monte-Carlo mean of phi_grid over n_samples pairs of Haar bases (k×r1, k×r2), shape r1×r2.

    Hu et al. 2021, Sec. 7.2 Fig. 4 (random Gaussian panel). Checks `random_phi_expected` and gives
    the spread of the random baseline at finite k.
    """
    grids = [
        phi_grid(random_orthonormal(k, r1, generator), random_orthonormal(k, r2, generator))
        for _ in range(n_samples)
    ]
    return torch.stack(grids).mean(dim=0)


# --- ΔW versus W0 ------------------------------------------------------------------------------


def projection_norm(W0: Tensor, U: Tensor, Vh: Tensor) -> Tensor:
    """‖Uᵀ·W0·Vhᵀ‖_F: the size of W0 inside the r-dimensional singular subspaces (U, Vh).

    W0 (..., d, k), U (..., d, r) orthonormal columns, Vh (..., r, k) orthonormal ROWS → (...).
    Hu et al. 2021, Sec. 7.3, Table 7: the paper writes UᵀWVᵀ, so its "V" is torch's Vh (right
    singular vectors as rows), not V = Vh.mT. Large when W0 already acts along these directions.
    """
    W0, U, Vh = upcast(W0, U, Vh)
    return torch.linalg.matrix_norm(U.mT @ W0 @ Vh.mT)


def amplification(
    W0: Tensor, update: Update, generator: torch.Generator | None = None,
    *, w0_svd: str = "dense", w0_top: tuple[Tensor, Tensor, Tensor] | None = None, n_iter: int = 2,
    dtype: torch.dtype = torch.float64,
) -> dict[str, float]:
    """Table 7 quantities for one weight at r = update.r, computed in `dtype` (default float64).

    proj_delta_w = ‖Uᵀ·W0·Vhᵀ‖_F with U, Vh the top-r singular vectors of ΔW (``update.svd``)
    proj_w0      = same with W0's own top-r U0, Vh0: ‖U0ᵀ·W0·Vh0ᵀ‖_F = ‖diag(S0[:r])‖ = sqrt(Σ_{i≤r} σ_i(W0)²),
                   the largest possible value
    proj_random  = same with Haar-random U (d×r), Vh (r×k) (singular vectors of a Gaussian matrix)
    norm_w0      = ‖W0‖_F;  norm_delta_w = ‖ΔW‖_F (``update.norm``), the scaling α/r INCLUDED
    amplification = norm_delta_w / proj_delta_w                 (Hu et al. 2021, Sec. 7.3, App. H.4)
    Shapes: W0 d×k, ΔW d×k. ΔW amplifies by this factor directions that W0 barely uses.
    U, Vh are the top r even if rank(ΔW) < r (as in the paper, microsoft/LoRA#70); the extra
    directions are then arbitrary. ΔW = 0 gives amplification 0. The paper does not say whether its
    ΔW includes α/r; here it does, so the factor scales linearly with the scaling. For a dense
    update (DoRA) U, Vh are its top r and norm_delta_w is the norm of the whole dense ΔW.

    W0's top r (only proj_w0 uses them): w0_top = (U0 d×p, S0 (p,), Vh0 p×k) with p ≥ r, an SVD the
    caller already has; else w0_svd = "dense" (torch.linalg.svd, O(d·k·min(d, k))) or "randomized"
    (`top_r_svd_randomized` with n_iter, O(d·k·r·(2·n_iter + 2)), for a 4096² W0; it draws from
    `generator` before the random baseline does). Every other quantity is exact either way.
    dtype=float32 halves the cost of the d×k products for a large W0 (relative error ~1e-6).
    """
    (W0,) = upcast(W0, dtype=dtype)
    r = update.r
    d, k = W0.shape
    if tuple(update.shape) != (d, k):
        raise ValueError(f"W0 is {d}×{k} but ΔW is {update.shape[0]}×{update.shape[1]}")
    if w0_top is None and w0_svd == "dense":
        w0_top = torch.linalg.svd(W0, full_matrices=False)
    elif w0_top is None and w0_svd == "randomized":
        w0_top = top_r_svd_randomized(W0, r, n_iter=n_iter, generator=generator)
    elif w0_top is None:
        raise ValueError(f"w0_svd={w0_svd!r}: use 'dense' or 'randomized'")
    S0 = w0_top[1]
    if S0.shape[-1] < r:
        raise ValueError(f"w0_top holds {S0.shape[-1]} singular values of W0, need r={r}")
    U, S, Vh = (x.to(W0.device) for x in update.svd(dtype))  # W0 may sit on the GPU, the factors not
    U_rand = random_orthonormal(d, r, generator).to(W0.device, dtype)
    Vh_rand = random_orthonormal(k, r, generator).mT.to(W0.device, dtype)
    proj_delta_w = projection_norm(W0, U[:, :r], Vh[:r])
    norm_delta_w = update.norm(dtype)
    return {
        "proj_delta_w": float(proj_delta_w),
        "proj_w0": float(torch.linalg.vector_norm(S0[:r].double())),
        "proj_random": float(projection_norm(W0, U_rand, Vh_rand)),
        "norm_w0": float(torch.linalg.matrix_norm(W0)),
        "norm_delta_w": float(norm_delta_w),
        "amplification": float(norm_delta_w / proj_delta_w),
    }


def top_r_svd_randomized(M: Tensor, r: int, n_oversample: int = 10, n_iter: int = 2,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Top-r U (d×r), S (r,), Vh (r×k) of M (d×k) by randomized subspace iteration.

    Y = (M·Mᵀ)^q·M·Ω with Gaussian Ω (k×(r+p)), orthonormalised by QR after every product;
    Q = orth(Y), then the small SVD Qᵀ·M = Uc·diag(S)·Vh, U = Q·Uc (Halko, Martinsson & Tropp 2011,
    Alg. 4.4 + 5.1), q = n_iter, p = n_oversample. Uᵀ·M·Vhᵀ = diag(S) holds exactly, as for a dense SVD.
    Cost O(d·k·(r+p)·(2q+2)) instead of O(d·k·min(d, k)); exact when rank(M) ≤ r + p, and the
    error in σ_i decays like (σ_{r+p+1}/σ_i)^(2q+1), so S underestimates a flat spectrum a little.
    In M's dtype, at least float32. For W0's top-r subspace in the amplification analysis
    (Hu et al. 2021, Sec. 7.3, Table 7) when W0 is too large for a dense SVD.
    """
    (M,) = upcast(M)
    d, k = M.shape
    if not 1 <= r <= min(d, k):
        raise ValueError(f"r must be in [1, {min(d, k)}] for a {d}×{k} matrix, got r={r}")
    n = min(r + n_oversample, d, k)
    Omega = torch.randn(k, n, generator=generator, dtype=M.dtype, device=M.device)
    Q, _ = torch.linalg.qr(M @ Omega)
    for _ in range(n_iter):
        Z, _ = torch.linalg.qr(M.mT @ Q)
        Q, _ = torch.linalg.qr(M @ Z)
    Uc, S, Vh = torch.linalg.svd(Q.mT @ M, full_matrices=False)
    return (Q @ Uc)[:, :r], S[:r], Vh[:r]
