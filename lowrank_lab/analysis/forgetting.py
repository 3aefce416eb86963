"""What intruder dimensions cost: a cell's intruder directions scaled by λ, its task metric and its
forgetting at each λ (Shuttleworth et al. 2024, arXiv:2410.21228, their Fig. 8 trade-off). Pure:
updates and W0 in, variants and DataFrames out; ``workflow.mitigate`` evaluates the variants.

Intruders of each adapted matrix by either definition of ``maths.rank_edit`` ("W0+dW",
Shuttleworth et al.'s, or "dW", of ΔW alone), top 10 singular vectors, ε = 0.5; every intruder
direction of every matrix of the cell scaled by the same λ ∈ LAMBDAS (λ = 1: the adapter; λ = 0:
those directions removed). Forgetting (``train.variants.general_scores``): a decoder's next-token
loss on text it never trained on minus the base's; an encoder's drift of its sentence vectors from
the base's on such text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import Tensor

from lowrank_lab.maths import rank_edit, stats
from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.train.variants import Variant

LAMBDAS = (1.0, 0.75, 0.5, 0.25, 0.0)
TOP_K, EPSILON = 10, 0.5  # Shuttleworth et al.'s find_intruder_dimensions.py defaults


def mitigation_variants(updates: Mapping[str, LowRankUpdate], W0: Callable[[LowRankUpdate], Tensor],
                        U_w0: Callable[[LowRankUpdate], Tensor] | None, head: Mapping[str, Tensor] | None,
                        lambdas: Sequence[float] = LAMBDAS, definitions: Sequence[str] = rank_edit.DEFINITIONS,
                        ) -> tuple[list[Variant], list[dict]]:
    """One variant per (definition, λ) and its row (definition, lam, n_intruders: summed over the
    cell's matrices, intruder_energy: Σ σ_j² of those directions / ‖ΔW‖_F² summed over matrices;
    for "W0+dW" the σ_j are W0 + ΔW's, so the ratio can exceed 1)."""
    variants, rows = [], []
    for definition in definitions:
        triplets = {label: rank_edit.intruder_triplets(W0(u), u.A, u.B, u.scaling, definition, TOP_K, EPSILON,
                                                       None if U_w0 is None else U_w0(u))
                    for label, u in updates.items()}
        n = sum(len(t["index"]) for t in triplets.values())
        norm2 = sum(float(u.norm()) ** 2 for u in updates.values())  # ‖ΔW‖_F² from the factors
        energy = sum(float(t["S"].square().sum()) for t in triplets.values())
        for lam in lambdas:
            factors = {}
            for label, u in updates.items():
                A, B = rank_edit.scaled_intruder_factors(u.A, u.B, u.scaling, triplets[label], lam)
                factors[u.path] = (A.float(), B.float())
            variants.append(Variant(factors, head))
            rows.append({"definition": definition, "lam": lam, "n_intruders": n,
                         "intruder_energy": energy / norm2 if norm2 > 0 else np.nan})
    return variants, rows


def forgetting_of(scores: Mapping[str, float]) -> float:
    """The forgetting number of one variant: general_loss − base_general_loss (decoder), or
    embedding_shift (encoder)."""
    if "general_loss" in scores:
        return scores["general_loss"] - scores["base_general_loss"]
    return scores["embedding_shift"]


def mitigation_table(cells: Sequence[tuple[dict, list[dict], list[dict], list[dict]]], metric: str) -> pd.DataFrame:
    """Rows (the cell's columns, definition, lam, n_intruders, intruder_energy, metric, value,
    dev_loss, forgetting and its parts) from (columns, variant rows, dev results, general scores)."""
    rows = []
    for cols, variants, results, general in cells:
        for v, res, g in zip(variants, results, general, strict=True):
            rows.append({**cols, **v, "metric": metric, "value": res[metric], "dev_loss": res.get("dev_loss", np.nan),
                         "forgetting": forgetting_of(g), **g})
    return pd.DataFrame(rows)


def tradeoff_table(mitigation: pd.DataFrame) -> pd.DataFrame:
    """Per (definition, r, λ): the median over seeds of the metric and of forgetting, each with its
    bootstrap interval (value_lo, value_hi, forgetting_lo, forgetting_hi; n seeds)."""
    rows = []
    for (definition, r, lam), g in mitigation.groupby(["definition", "r", "lam"], sort=True):
        value, forget = stats.bootstrap_median(g.value.to_numpy()), stats.bootstrap_median(g.forgetting.to_numpy())
        rows.append({"definition": definition, "r": r, "lam": lam, "n": value["n"],
                     "value": value["median"], "value_lo": value["lo"], "value_hi": value["hi"],
                     "forgetting": forget["median"], "forgetting_lo": forget["lo"], "forgetting_hi": forget["hi"],
                     "n_intruders": float(g.n_intruders.median())})
    return pd.DataFrame(rows).sort_values(["definition", "r", "lam"], ascending=[True, True, False], ignore_index=True)


def correlation_table(mitigation: pd.DataFrame) -> pd.DataFrame:
    """Spearman's ρ across cells (λ = 1, the adapters as trained) between the intruder count of
    each definition and forgetting, with its permutation p-value and n."""
    at1 = mitigation[mitigation.lam == 1.0]
    return pd.DataFrame([{"definition": d, "x": "n_intruders", "y": "forgetting",
                          **stats.spearman(g.n_intruders.to_numpy(), g.forgetting.to_numpy())}
                         for d, g in at1.groupby("definition", sort=True)])


def lambda_sign_tests(mitigation: pd.DataFrame) -> pd.DataFrame:
    """Paired sign tests across cells (every rank and seed) of λ < 1 against λ = 1, per definition:
    does scaling the intruders down lower forgetting, and does it lower the metric? wins = cells
    where the λ variant's number is larger."""
    rows = []
    for definition, g in mitigation.groupby("definition", sort=True):
        ref = g[g.lam == 1.0].set_index("cell")
        for lam in sorted(set(g.lam) - {1.0}, reverse=True):
            other = g[g.lam == lam].set_index("cell").loc[ref.index]
            for quantity in ("value", "forgetting"):
                rows.append({"definition": definition, "lam": lam, "quantity": quantity, "against_lam": 1.0,
                             **stats.sign_test(other[quantity].to_numpy(), ref[quantity].to_numpy())})
    return pd.DataFrame(rows)
