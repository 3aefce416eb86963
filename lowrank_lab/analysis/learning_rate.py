"""Learning rate against rank: the analyses of "LoRA Without Regret" (Schulman et al., 2025) on a sweep.

Input: the results table, one row per finished cell with the columns ``method``, ``targets``, ``r``,
``size``, ``lr``, ``seed`` and the value columns (the main dev metric at the final and at the best
evaluation, the final dev loss). A *group* is one (method, targets, r, size): a curve over learning
rates, seeds pooled. ``size`` is the adapter baselines' bottleneck m or prefix length l_p (0 for the
other methods, and for tables written before it existed), so that each size gets its own best
learning rate, as each rank does.

- ``lr_curves``: per group and learning rate, the median of a value over seeds and its range.
- ``best_lr``: per group, the learning rate whose seed-median is best, with the interval of the
  per-seed best learning rates, and the ratio of each group's best learning rate to full
  fine-tuning's (their finding: about 10× under 1/r scaling, nearly independent of r).
- ``at_best_lr``: the rows of the cells trained at their group's best learning rate, so the paper's
  tables (2, 5, 6, 18) compare ranks at tuned, not at one untuned, learning rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["method", "targets", "r", "size"]
LOWER_IS_BETTER = ("loss", "perplexity")


def with_size(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with the ``size`` column of GROUP: as it is, or size = 0 for a table written before
    the adapter baselines (every cell then a LoRA, full, BitFit or head-only cell, of no size)."""
    return table if "size" in table else table.assign(size=0)


def lower_is_better(column: str) -> bool:
    """Losses and perplexities fall as a model improves; every GLUE metric rises."""
    return any(word in column for word in LOWER_IS_BETTER)


def lr_curves(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per group × learning rate: median, min and max of `value` over seeds, and the seed count."""
    results = with_size(results)
    stats = results.groupby(GROUP + ["lr"], dropna=False)[value].agg(["median", "min", "max", "count"])
    return stats.rename(columns={"count": "n_seeds"}).reset_index().assign(value=value)


def best_lr(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per group: the best learning rate by the seed-median of `value`, and its interval.

    Columns: best_lr (argbest of the median over seeds), best (that median), lr_low/lr_high (the
    smallest and largest of the per-seed best learning rates: where the optimum lies across seeds),
    n_lr (learning rates tried), at_edge (the best is the smallest or largest tried: widen the grid),
    ratio_to_full (best_lr / full fine-tuning's best_lr; NaN without a full fine-tuning group).
    Ties go to the smaller learning rate."""
    sign = 1.0 if lower_is_better(value) else -1.0
    results = with_size(results)
    curves = lr_curves(results, value)
    rows = []
    for key, curve in curves.groupby(GROUP, dropna=False, sort=True):
        curve = curve.sort_values("lr")
        top = curve.iloc[int(np.argmin(sign * curve["median"].to_numpy()))]
        per_seed = _per_seed_best(results.merge(curve[GROUP].drop_duplicates(), on=GROUP), value, sign)
        lrs = curve["lr"].to_numpy()
        rows.append({**dict(zip(GROUP, key)), "value": value, "best_lr": top["lr"], "best": top["median"],
                     "lr_low": per_seed.min(), "lr_high": per_seed.max(), "n_seeds": len(per_seed),
                     "n_lr": len(lrs), "at_edge": len(lrs) > 1 and top["lr"] in (lrs.min(), lrs.max())})
    table = pd.DataFrame(rows)
    full = table.loc[table["method"] == "full", "best_lr"]
    table["ratio_to_full"] = table["best_lr"] / full.iloc[0] if len(full) == 1 else np.nan
    return table


def _per_seed_best(rows: pd.DataFrame, value: str, sign: float) -> pd.Series:
    """For each seed of one group, the learning rate of its best `value` (ties: the smaller)."""
    ordered = rows.sort_values(["seed", "lr"])
    return ordered.loc[(sign * ordered[value]).groupby(ordered["seed"]).idxmin(), "lr"]


def at_best_lr(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """The cells of each group at that group's best learning rate (every seed of it)."""
    results = with_size(results)
    best = best_lr(results, value)[GROUP + ["best_lr"]]
    merged = results.merge(best, on=GROUP, how="inner")
    return merged[merged["lr"] == merged["best_lr"]].drop(columns="best_lr").reset_index(drop=True)


def has_lr_axis(results: pd.DataFrame) -> bool:
    """True when some group was trained at more than one learning rate."""
    return "lr" in results and bool((with_size(results).groupby(GROUP, dropna=False)["lr"].nunique() > 1).any())


def learning_curves_table(cells) -> pd.DataFrame:
    """The training loss against step of every cell (its learning curve), from (name, CellSpec,
    metrics records): the ``kind == "train"`` records logged every train.log_every steps, or the
    evaluations' training loss for cells logged without them. Columns: cell, method, targets, r,
    size (bottleneck m, prefix length l_p; 0 for the other methods), alpha, lr, seed, step, epoch,
    train_loss."""
    rows = []
    for name, spec, records in cells:
        logged = [r for r in records if r.get("kind") == "train"] or [r for r in records if "train_loss" in r]
        is_lora = spec.lora.method == "lora"
        head = {"cell": name, "method": spec.lora.method, "targets": spec.lora.targets if is_lora else "",
                "r": spec.lora.r if is_lora else 0, "size": spec.size,
                "alpha": spec.lora.alpha, "lr": spec.lr, "seed": spec.train.seed}
        rows += [{**head, "step": r["step"], "epoch": r["epoch"], "train_loss": r["train_loss"]} for r in logged]
    columns = ["cell", "method", "targets", "r", "size", "alpha", "lr", "seed", "step", "epoch", "train_loss"]
    return pd.DataFrame(rows, columns=columns)


def curves_at_best_lr(curves: pd.DataFrame, results: pd.DataFrame, value: str) -> pd.DataFrame:
    """The learning curves of each group at its best learning rate (by `value` in `results`),
    the median over seeds at every step: columns method, targets, r, size, lr, step, train_loss, n_seeds."""
    best = best_lr(results, value)[GROUP + ["best_lr"]]
    if "size" not in curves and {"cell", "size"} <= set(results):  # curves cached before sizes: the cells'
        curves = curves.merge(results[["cell", "size"]].drop_duplicates(), on="cell", how="left")
    chosen = with_size(curves).merge(best, on=GROUP)
    chosen = chosen[chosen["lr"] == chosen["best_lr"]]
    stats = chosen.groupby(GROUP + ["lr", "step"], dropna=False)["train_loss"].agg(["median", "count"])
    return stats.rename(columns={"median": "train_loss", "count": "n_seeds"}).reset_index()
