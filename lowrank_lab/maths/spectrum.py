"""Spectra of ΔW: energy, stable and effective rank, Eckart–Young errors, intruder dimensions.

Inputs are singular values S (descending or not) from ``linalg.factored_svd`` (LoRA's ΔW, from the
factors) or from a dense SVD (full fine-tuning's ΔW); intruder dimensions compare the singular
vectors of W0 + ΔW with W0's (Shuttleworth et al. 2024). Only torch is imported.
"""


import torch
from torch import Tensor

from lowrank_lab.maths.linalg import top_r_svd_randomized, upcast


# --- spectrum of ΔW ----------------------------------------------------------------------------
# A zero spectrum (ΔW at init, B = 0) is defined, not nan: rank-like metrics are 0, every rank-k
# approximation is exact (relative error 0, energy fraction 1), so tables over training stay finite.


def _spectrum(S: Tensor) -> Tensor:
    # float64 so that tail sums of tiny σ² are not lost next to σ_max²; sorted so any order works.
    if S.ndim != 1:
        raise ValueError(f"S must be 1-D singular values, got shape {tuple(S.shape)}")
    if bool((S < 0).any()):
        raise ValueError("singular values must be non-negative")
    return S.to(torch.float64).sort(descending=True).values


def energy_fraction(S: Tensor) -> Tensor:
    """Cumulative energy E[k-1] = Σ_{i≤k} σ_i² / Σ_i σ_i² for k = 1..n, shape (n,), last entry 1.

    Biderman et al. 2024 (arXiv:2405.09673), "variance explained" by the top k directions.
    """
    S = _spectrum(S)
    cum = S.square().cumsum(dim=0)
    total = cum[-1]
    return torch.where(total > 0, cum / total.clamp(min=torch.finfo(cum.dtype).tiny), 1.0)


def rank_for_energy(S: Tensor, threshold: float) -> int:
    """Smallest k ∈ {0..n} with Σ_{i≤k} σ_i² / Σ σ_i² ≥ threshold, 0 < threshold ≤ 1.

    Biderman et al. 2024 (k₉₀ at threshold 0.9). How many directions ΔW really uses.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    S = _spectrum(S)
    if S[0] == 0:
        return 0
    return int((energy_fraction(S) < threshold).sum()) + 1


def spectrum_metrics(S: Tensor) -> dict[str, float]:
    """Scalar summaries of singular values S (n,), descending (sorted internally otherwise).

    sigma_max = σ_1;  frobenius = sqrt(Σσ_i²);  stable_rank = Σσ_i² / σ_1²;
    effective_rank = exp(−Σ p_i·ln p_i), p_i = σ_i / Σσ_j (L1 normalisation, Roy & Vetterli 2007);
    rank_90 = rank_for_energy(S, 0.9) (Biderman et al. 2024).
    Hu et al. 2021, Sec. 7.2 ("intrinsic rank" of ΔW).
    stable_rank and effective_rank are soft ranks in [1, n] (0 for S = 0): how many directions
    carry the update.
    """
    S = _spectrum(S)
    sigma_max, frobenius = S[0], torch.linalg.vector_norm(S)
    if sigma_max == 0:
        stable_rank = effective_rank = 0.0
    else:
        stable_rank = float(frobenius.square() / sigma_max.square())
        effective_rank = float(torch.exp(torch.special.entr(S / S.sum()).sum()))
    return {
        "sigma_max": float(sigma_max),
        "frobenius": float(frobenius),
        "stable_rank": stable_rank,
        "effective_rank": effective_rank,
        "rank_90": rank_for_energy(S, 0.9),
    }


def eckart_young_curve(S: Tensor) -> Tensor:
    """Relative error e[k] = ‖M − M_k‖_F / ‖M‖_F = sqrt(Σ_{i>k} σ_i² / Σ σ_i²), k = 0..n, (n+1,).

    M_k is the best rank-k approximation (Eckart & Young 1936): e[0] = 1, e[n] = 0.
    Hu et al. 2021, Sec. 7.2: how much of ΔW a smaller r could keep.
    """
    S = _spectrum(S)
    # Tail sums from the small end: "total − prefix" would cancel catastrophically for small tails.
    tail = S.square().flip(0).cumsum(dim=0).flip(0)
    tail = torch.cat([tail, tail.new_zeros(1)])
    return (tail / tail[0].clamp(min=torch.finfo(tail.dtype).tiny)).sqrt()


def eckart_young_error(S: Tensor, k: int) -> float:
    """Relative Frobenius error of the best rank-k approximation, sqrt(Σ_{i>k} σ_i² / Σ σ_i²).

    S (n,) singular values, 0 ≤ k ≤ n. Eckart & Young 1936; see `eckart_young_curve`.
    0 for a zero spectrum: there is nothing to approximate.
    """
    if not 0 <= k <= S.shape[-1]:
        raise ValueError(f"k must be in [0, {S.shape[-1]}], got k={k}")
    return float(eckart_young_curve(S)[k])


# --- intruder dimensions -----------------------------------------------------------------------


INTRUDER_ITERATIONS, INTRUDER_OVERSAMPLE = 12, 20  # the randomized route's power iterations and oversampling


def intruder_dimensions(
    W0: Tensor, W_tuned: Tensor, top_k: int = 10, epsilon: float = 0.5,
    *, dtype: torch.dtype | None = None, U_w0: Tensor | None = None, method: str = "dense",
) -> dict[str, Tensor | int]:
    """Top singular vectors of W_tuned with no counterpart among W0's (Shuttleworth et al. 2024).

    max_cos[j] = max_i |⟨y_j, x_i⟩| for the top_k left singular vectors y_j of W_tuned (d×k) and ALL
    left singular vectors x_i of W0 (d×k, thin SVD, so min(d, k) of them); y_j is an intruder iff
    max_cos[j] < epsilon. Returns max_cos (top_k,), is_intruder (top_k, bool), n_intruders (int);
    top_k is capped at min(d, k).
    arXiv:2410.21228; defaults top_k = 10, ε = 0.5 follow their find_intruder_dimensions.py.
    LoRA tends to add new high-ranking directions; full fine-tuning mostly rotates existing ones.
    In `dtype` (default: input dtype, at least float32); U_w0, W0's left singular vectors
    (d×min(d, k)), spares the SVD of W0 when the caller has it. method "dense": a full SVD of
    W_tuned; "randomized": only its top_k left singular vectors, by randomized subspace iteration
    (``linalg.top_r_svd_randomized``, INTRUDER_ITERATIONS power iterations, INTRUDER_OVERSAMPLE
    extra directions, a fixed seed), O(d·k·(top_k + 20)·26) instead of O(d·k·min(d, k)); exact
    when top_k + 20 ≥ min(d, k), else its error against "dense" is what the caller measures.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    W0, W_tuned = upcast(W0, W_tuned, dtype=dtype)
    if U_w0 is None:
        U_w0, _, _ = torch.linalg.svd(W0, full_matrices=False)
    top_k = min(top_k, *W_tuned.shape[-2:])
    if method == "dense":
        U_tuned = torch.linalg.svd(W_tuned, full_matrices=False)[0][..., :, :top_k]
    elif method == "randomized":
        U_tuned = top_r_svd_randomized(W_tuned, top_k, INTRUDER_OVERSAMPLE, INTRUDER_ITERATIONS,
                                       torch.Generator(device=W_tuned.device).manual_seed(0))[0]
    else:
        raise ValueError(f"method={method!r}: use 'dense' or 'randomized'")
    max_cos = (U_tuned.mT @ U_w0).abs().amax(dim=-1)
    is_intruder = max_cos < epsilon
    return {"max_cos": max_cos, "is_intruder": is_intruder, "n_intruders": int(is_intruder.sum())}


def intruder_counts(max_cos: Tensor, epsilons: Tensor) -> Tensor:
    """Number of intruders #{j : max_cos[j] < ε} for each ε in epsilons, shape (..., n_eps).

    max_cos (..., top_k) from `intruder_dimensions`; epsilons (n_eps,). Shuttleworth et al. 2024
    sweep ε ∈ [0.1, 0.9]; reusing max_cos avoids recomputing two SVDs per ε.
    """
    epsilons = torch.as_tensor(epsilons, dtype=max_cos.dtype, device=max_cos.device)
    return (max_cos[..., None, :] < epsilons[:, None]).sum(dim=-1)
