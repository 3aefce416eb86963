"""How ΔW's subspaces form during training: factor snapshots in, tidy tables out.

The input is one entry per LoRA cell: its spec columns (``analysis.sweep.run_columns``) and its
snapshots {step: {label: LowRankUpdate}} (``train.snapshot_every``). Two tables:

- ``dynamics_phi_table``: φ(A_t, A_final) of each cell ("final"), and φ between the cells of two
  ranks at one seed ("ranks") and of two seeds at one rank ("seeds") at every step both have; φ as
  in Hu et al. 2021 Eq. 4 on the right singular vectors of A (side A, the paper's; ΔW has no basis
  at step 0, where B = 0), at the top direction (``phi_top``: i = j = 1) and over the whole
  subspaces (``phi``: i = r1, j = r2). Each row carries its random baseline: the mean and standard
  deviation over ``stats.N_RANDOM`` pairs of Haar subspaces of the same dimensions.
- ``dynamics_spectrum_table``: ‖ΔW_t‖_F, stable and effective rank, rank_90 (Biderman et al.
  2024), and intruder counts of W0 + ΔW_t at ε = 0.5 (Shuttleworth et al. 2024) per step.

Pure: objects in, DataFrames out."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from lowrank_lab.analysis import tables as an
from lowrank_lab.maths import linalg, spectrum, stats
from lowrank_lab.maths.update import LowRankUpdate

Snapshots = Mapping[int, Mapping[str, LowRankUpdate]]
GROUP_KEYS = ["task", "targets", "scaling_rule", "init", "alpha"]
INTRUDER_EPSILON = 0.5  # Shuttleworth et al. 2024's default


class RandomBaselines:
    """Mean and spread of φ for random subspaces: n_draws pairs per (r1, r2, dim), from a generator
    seeded by `seed` and the shape, so a table does not depend on the order it meets the shapes in."""

    def __init__(self, seed: int = 0, n_draws: int = stats.N_RANDOM):
        self.seed, self.n_draws = seed, n_draws
        self._cache: dict[tuple[int, int, int], dict[str, float]] = {}

    def __call__(self, r1: int, r2: int, dim: int) -> dict[str, float]:
        key = (r1, r2, dim)
        if key not in self._cache:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + r1 * 65_537 + r2 * 257 + dim)
            grids = stats.random_phi_draws(r1, r2, dim, self.n_draws, gen)
            full, top = grids[:, -1, -1], grids[:, 0, 0]
            self._cache[key] = {"phi_random": float(full.mean()), "phi_random_sd": float(full.std()),
                                "phi_top_random": float(top.mean()), "phi_top_random_sd": float(top.std()),
                                "n_random": self.n_draws}
        return self._cache[key]


def _phi_rows(first: Mapping[str, LowRankUpdate], second: Mapping[str, LowRankUpdate],
              baselines: RandomBaselines, basis_of: Callable[[LowRankUpdate], Tensor]) -> list[dict]:
    rows = []
    for label in [lab for lab in first if lab in second]:
        V1, V2 = basis_of(first[label]), basis_of(second[label])
        grid = linalg.phi_grid(V1, V2)
        r1, r2, dim = V1.shape[1], V2.shape[1], V1.shape[0]
        rows.append({**an.label_columns(label), "r1": r1, "r2": r2, "dim": dim, "phi_top": float(grid[0, 0]),
                     "phi": float(grid[-1, -1]), **baselines(r1, r2, dim)})
    return rows


def dynamics_phi_table(cells: Sequence[tuple[dict, Snapshots]], seed: int = 0) -> pd.DataFrame:
    """Rows (comparison, step, the cells' keys, r1, r2, seed1, seed2, label, layer, module, dim,
    phi_top, phi, phi_random, phi_random_sd, phi_top_random, phi_top_random_sd, n_random)."""
    baselines, cache = RandomBaselines(seed), {}

    def basis_of(u: LowRankUpdate) -> Tensor:
        if id(u) not in cache:
            cache[id(u)] = linalg.top_right_basis(u.A, dtype=torch.float64)  # side A: right singular vectors of A
        return cache[id(u)]

    rows = []
    for cols, snaps in cells:
        final = snaps[max(snaps)]
        for step, updates in snaps.items():
            keys = {k: cols[k] for k in ("task", "targets", "scaling_rule", "init", "alpha")}
            rows += [{"comparison": "final", "step": step, **keys, "cell": cols["cell"], "seed1": cols["seed"],
                      "seed2": cols["seed"], **row} for row in _phi_rows(updates, final, baselines, basis_of)]
    groups: dict[tuple, dict[tuple[int, int], Snapshots]] = {}
    for cols, snaps in cells:
        groups.setdefault(tuple(cols[k] for k in GROUP_KEYS), {})[cols["seed"], cols["r"]] = snaps
    for group, members in groups.items():
        keys = dict(zip(GROUP_KEYS, group, strict=True))
        pairs = [("ranks", a, b) for a, b in itertools.combinations(sorted(members), 2) if a[0] == b[0]]
        pairs += [("seeds", a, b) for a, b in itertools.combinations(sorted(members), 2) if a[1] == b[1]]
        for comparison, (s1, ra), (s2, rb) in pairs:
            one, two = members[s1, ra], members[s2, rb]
            for step in sorted(set(one) & set(two)):
                rows += [{"comparison": comparison, "step": step, **keys, "cell": "", "seed1": s1, "seed2": s2, **row}
                         for row in _phi_rows(one[step], two[step], baselines, basis_of)]
    return pd.DataFrame(rows)


def dynamics_spectrum_table(cells: Sequence[tuple[dict, Snapshots]], W0: an.W0Source,
                            svd0: an.W0SVD | None = None) -> pd.DataFrame:
    """Rows (the cell's columns, step, label, layer, module, frobenius, sigma_max, stable_rank,
    effective_rank, rank_90, n_intruders, top_k, epsilon) for every snapshot of every cell; ΔW
    includes its scaling. Intruders: top 10 left singular vectors of W0 + ΔW_t with max |cos| below
    ε = 0.5 against every left singular vector of W0 (dense SVDs: W0 is dense anyway)."""
    rows = []
    for cols, snaps in cells:
        for step, updates in snaps.items():
            for label, u in updates.items():
                S = linalg.factored_svd(u.A, u.B, u.scaling, dtype=torch.float64)[1]
                metrics = spectrum.spectrum_metrics(S)
                W = (W0[u.label] if isinstance(W0, Mapping) else W0(u)).detach().to(torch.float64)
                found = spectrum.intruder_dimensions(W, W + linalg.delta_w(u.A.double(), u.B.double(), u.scaling),
                                                     an.INTRUDER_TOP_K, INTRUDER_EPSILON, dtype=torch.float64,
                                                     U_w0=None if svd0 is None else svd0(u)[0])
                rows.append({**cols, "step": step, **an.label_columns(label), **metrics,
                             "n_intruders": found["n_intruders"], "top_k": len(found["max_cos"]),
                             "epsilon": INTRUDER_EPSILON})
    return pd.DataFrame(rows)
