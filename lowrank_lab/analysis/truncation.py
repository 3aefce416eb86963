"""How much of ΔW's rank a task uses: every update truncated to its best rank k (Eckart & Young
1936), its dev metric against k, beside the energy it keeps. Pure: updates in, variants and
DataFrames out; ``workflow.truncate`` evaluates the variants (``train.variants``).

A LoRA cell of rank r is truncated to k ∈ {0, 1, 2, 4, …, r} and to "rank_90" (each matrix at the
smallest k holding 90% of its energy, Biderman et al. 2024); full fine-tuning's dense ΔW = W_ft − W0
(attention and MLP matrices) to k ∈ {0, 1, 2, 4, …, 256} and rank_90, its other trained weights
(embeddings, biases, layer norms) and head as trained. The same k applies to every matrix of the
cell. energy(k) = Σ_matrices Σ_{i≤k} σ_i² / Σ_matrices Σ_i σ_i², the fraction of ‖ΔW‖_F² kept;
Eckart–Young says ΔW_k is the closest rank-k update in Frobenius norm, with relative error
sqrt(1 − energy) per matrix, not that it keeps the metric: the table shows how far the metric follows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lowrank_lab.maths import rank_edit, spectrum, stats
from lowrank_lab.maths.linalg import factored_svd
from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.train.variants import Variant

FULL_MAX_K = 256
WITHIN_POINTS = 0.5  # "the smallest k within 0.5 points of the untruncated metric"
RANK_90 = "rank_90"


def powers_of_two(top: int) -> list[int]:
    """[0, 1, 2, 4, …] up to `top`, `top` itself included."""
    ks, k = [0], 1
    while k < top:
        ks.append(k)
        k *= 2
    return ks + [top]


def _variants(svds: Mapping[str, tuple[Tensor, Tensor, Tensor]], paths: Mapping[str, str], ks: Sequence[int],
              head: Mapping[str, Tensor] | None) -> tuple[list[Variant], list[dict]]:
    total = sum(float(S.square().sum()) for _, S, _ in svds.values())
    k90 = {label: spectrum.rank_for_energy(S, 0.9) if float(S.max()) > 0 else 0 for label, (_, S, _) in svds.items()}
    variants, rows = [], []
    for rule, k in [("k", k) for k in ks] + [(RANK_90, None)]:
        factors, kept = {}, 0.0
        for label, (U, S, Vh) in svds.items():
            kk = k90[label] if k is None else min(k, len(S))
            A, B = rank_edit.svd_truncated_factors(U, S, Vh, kk)
            if kk:
                factors[paths[label]] = (A.float(), B.float())
            kept += float(S[:kk].square().sum())
        variants.append(Variant(factors, head))
        rows.append({"k_rule": rule, "k": k if k is not None else int(np.median(list(k90.values()))),
                     "energy": kept / total if total > 0 else 1.0})
    return variants, rows


def lora_truncations(updates: Mapping[str, LowRankUpdate], head: Mapping[str, Tensor] | None) -> tuple[list[Variant], list[dict]]:
    """The truncations of one LoRA cell (module docstring) and, per variant, its k_rule ("k" or
    "rank_90"), k (for rank_90 the median over matrices) and energy kept."""
    svds = {label: factored_svd(u.A, u.B, u.scaling, dtype=torch.float64) for label, u in updates.items()}
    r = max(u.r for u in updates.values())
    return _variants(svds, {label: u.path for label, u in updates.items()}, powers_of_two(r), head)


def full_truncations(deltas: Mapping[str, Tensor], paths: Mapping[str, str], head: Mapping[str, Tensor] | None,
                     max_k: int = FULL_MAX_K) -> tuple[list[Variant], list[dict]]:
    """The truncations of full fine-tuning's dense ΔW per matrix (`deltas` label → d×in, `paths`
    label → module path), k up to min(max_k, min(d, in))."""
    svds = {label: torch.linalg.svd(D.to(torch.float64), full_matrices=False) for label, D in deltas.items()}
    top = min(max_k, min(len(S) for _, S, _ in svds.values()))
    return _variants(svds, paths, powers_of_two(top), head)


def truncation_table(cells: Sequence[tuple[dict, list[dict], list[dict]]], metric: str,
                     lower_is_better: bool = False) -> pd.DataFrame:
    """Rows (the cell's columns, k_rule, k, energy, metric, value, dev_loss, untruncated, change):
    one per variant of each cell ((columns, variant rows, evaluation results)). untruncated: the
    value at the largest k of the "k" rule (ΔW itself); change: value − untruncated, in points
    (×100) for a metric in [0, 1], sign flipped when lower is better so that < 0 is always worse."""
    frames = []
    for cols, variants, results in cells:
        t = pd.DataFrame([{**v, "metric": metric, "value": res[metric], "dev_loss": res.get("dev_loss", np.nan)}
                          for v, res in zip(variants, results, strict=True)])
        full = t[t.k_rule == "k"].sort_values("k").iloc[-1]["value"]
        sign = -1.0 if lower_is_better else 1.0
        frames.append(t.assign(untruncated=full, change=sign * (t.value - full) * _points(metric)).assign(**cols)
                      [[*cols, *t.columns, "untruncated", "change"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _points(metric: str) -> float:
    return 100.0 if metric in ("accuracy", "f1", "matthews", "pearson", "spearman", "label_accuracy") else 1.0


def smallest_k_table(truncation: pd.DataFrame, within: float = WITHIN_POINTS) -> pd.DataFrame:
    """Per cell: the smallest k (rule "k") whose metric is within `within` points of the
    untruncated one (change ≥ −within), with its energy; columns method, r, seed, cell, k_min, energy_at_k_min."""
    rows = []
    for cell, t in truncation[truncation.k_rule == "k"].groupby("cell", sort=False):
        ok = t[t.change >= -within].sort_values("k")
        first = ok.iloc[0]
        rows.append({**{c: t.iloc[0][c] for c in ("task", "method", "targets", "r", "seed")}, "cell": cell,
                     "k_max": int(t.k.max()), "k_min": int(first.k), "energy_at_k_min": float(first.energy),
                     "untruncated": float(first.untruncated)})
    return pd.DataFrame(rows)


def median_table(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Median of `value` over seeds for each group of `by`, with its bootstrap interval
    (``stats.bootstrap_median``: lo, hi; NaN and n = 1 for one seed)."""
    rows = []
    for key, g in frame.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "quantity": value, **stats.bootstrap_median(g[value].to_numpy())})
    return pd.DataFrame(rows)
