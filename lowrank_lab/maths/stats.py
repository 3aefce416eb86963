"""How sure a number is: bootstrap intervals of medians over seeds, paired sign tests, rank
correlation, and random baselines as a mean over many draws with their spread. Only torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lowrank_lab.maths.linalg import phi_grid, random_orthonormal

N_BOOT = 2000  # bootstrap resamples
LEVEL = 0.95  # two-sided interval
N_RANDOM = 200  # draws of a random baseline (at least 100)


def _as64(x: Sequence[float] | Tensor) -> Tensor:
    # a copy: pandas hands out read-only arrays, which torch would only view
    return x.to(torch.float64).flatten() if isinstance(x, Tensor) else torch.tensor(list(map(float, x)), dtype=torch.float64)


def _values(x: Sequence[float] | Tensor) -> Tensor:
    t = _as64(x)
    return t[~t.isnan()]


def bootstrap_median(x: Sequence[float] | Tensor, n_boot: int = N_BOOT, level: float = LEVEL,
                     generator: torch.Generator | None = None) -> dict[str, float]:
    """The median of `x` (NaNs dropped) with a percentile bootstrap interval over its n values:
    medians of n_boot resamples of n with replacement, their (1 − level)/2 and (1 + level)/2
    quantiles (Efron & Tibshirani 1993, §13.3). Returns median, lo, hi, n; lo = hi = NaN when
    n < 2 (one seed has no spread to resample: say n = 1). The median of an even n is the mean
    of the two middle values (numpy's, not torch's lower median)."""
    v = _values(x)
    n = v.numel()
    if n == 0:
        return {"median": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    median = float(v.quantile(0.5))
    if n < 2:
        return {"median": median, "lo": math.nan, "hi": math.nan, "n": n}
    gen = generator or torch.Generator().manual_seed(0)
    idx = torch.randint(0, n, (n_boot, n), generator=gen)
    medians = v[idx].quantile(0.5, dim=1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = medians.quantile(q).tolist()
    return {"median": median, "lo": lo, "hi": hi, "n": n}


def sign_test(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor) -> dict[str, float]:
    """Paired two-sided sign test of x against y (same pairs, e.g. one rank × seed each).

    wins = #(x > y), losses = #(x < y), ties dropped; under H0 wins ~ Binomial(wins + losses, ½),
    p = min(1, 2·P(W ≤ min(wins, losses))) exactly. Pairs with a NaN are dropped."""
    x, y = _as64(x), _as64(y)
    if x.shape != y.shape:
        raise ValueError(f"sign_test: {x.numel()} values against {y.numel()}; give paired values")
    keep = ~(x.isnan() | y.isnan())
    d = x[keep] - y[keep]
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    m = wins + losses
    tail = sum(math.comb(m, i) for i in range(min(wins, losses) + 1)) / 2**m if m else 1.0
    return {"n": m, "wins": wins, "losses": losses, "ties": int(keep.sum()) - m, "p_value": min(1.0, 2 * tail)}


def _ranks(v: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank."""
    order = v.argsort()
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    for value in v.unique():
        tied = v == value
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor, n_perm: int = 10000,
             generator: torch.Generator | None = None) -> dict[str, float]:
    """Spearman's ρ (Pearson's correlation of the average ranks) of paired x, y, and a two-sided
    permutation p-value: the fraction of n_perm shuffles of y with |ρ| ≥ the observed |ρ|
    (counting the observed one, so p > 0). ρ = NaN when either side is constant or n < 3."""
    x, y = _as64(x), _as64(y)
    keep = ~(x.isnan() | y.isnan())
    x, y = x[keep], y[keep]
    n = x.numel()
    if n < 3 or bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return {"rho": math.nan, "p_value": math.nan, "n": n}
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    rho = float((rx @ ry) / (rx.norm() * ry.norm()))
    gen = generator or torch.Generator().manual_seed(0)
    perms = torch.stack([ry[torch.randperm(n, generator=gen)] for _ in range(n_perm)])
    null = (perms @ rx) / (rx.norm() * ry.norm())
    p = (int((null.abs() >= abs(rho) - 1e-12).sum()) + 1) / (n_perm + 1)
    return {"rho": rho, "p_value": p, "n": n}


def random_phi_draws(r1: int, r2: int, k: int, n_draws: int = N_RANDOM,
                     generator: torch.Generator | None = None) -> Tensor:
    """φ grids (n_draws, r1, r2) of independent Haar-random subspaces of ℝᵏ (``linalg.phi_grid``
    of two ``random_orthonormal`` bases per draw): the random baseline of Hu et al. 2021 §7.2 as a
    distribution, whose mean tends to max(i, j)/k."""
    if n_draws < 1:
        raise ValueError(f"n_draws must be positive, got {n_draws}")
    return torch.stack([phi_grid(random_orthonormal(k, r1, generator), random_orthonormal(k, r2, generator))
                        for _ in range(n_draws)])


def random_phi_baseline(r1: int, r2: int, k: int, n_draws: int = N_RANDOM,
                        generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean and standard deviation over n_draws (≥ 100 by default) of φ(i = r1, j = r2) between
    independent Haar subspaces of dimensions r1 and r2 in ℝᵏ; mean ≈ max(r1, r2)/k."""
    phi = random_phi_draws(r1, r2, k, n_draws, generator)[:, -1, -1]
    return {"mean": float(phi.mean()), "sd": float(phi.std()), "n_draws": n_draws}
