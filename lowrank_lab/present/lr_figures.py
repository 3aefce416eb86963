"""Learning rate against rank, as "LoRA Without Regret" (Schulman et al., 2025) draws it: dev metric and
dev loss against learning rate, one curve per rank with full fine-tuning's on the same axes; the best
learning rate per rank and method; learning curves at the best learning rate; attention-only against
more matrices at equal rank. Tables in (the results and learning-curve tables), figures out; no torch.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lowrank_lab.analysis import learning_rate as lr
from lowrank_lab.present import plotting  # noqa: F401  (its rcParams apply to these figures too)
from lowrank_lab.present import tables
from lowrank_lab.present.select import MissingData

FULL_STYLE = {"color": "black", "ls": "--", "marker": "s"}
PLAIN = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")


def _need_lr_axis(results: pd.DataFrame) -> None:
    if not lr.has_lr_axis(results):
        raise MissingData("the sweep has one learning rate per cell group")


def _label(row) -> str:
    if row["method"] == "lora":
        return f"LoRA {row['targets']} r={int(row['r'])}"
    plain = {"full": "full fine-tuning", "bitfit": "BitFit", "head": "head only"}
    if row["method"] in plain:
        return plain[row["method"]]
    return tables.METHOD_NAMES.get(row["method"], row["method"]).format(t="", r=0, n=int(row.get("size", 0)))


# The other baselines: a dash pattern per method (METHOD_ORDER's), and a colour per (method, size)
# group from these, none of them on LoRA's viridis ramp or full fine-tuning's black.
BASELINE_DASHES = {"bitfit": "-.", "head": ":", "houlsby": (0, (6, 2)), "pfeiffer": (0, (3, 1, 1, 1, 1, 1)),
                   "prefix": (0, (8, 2, 1, 2))}
BASELINE_COLORS = ("tab:orange", "tab:red", "tab:brown", "tab:pink", "tab:cyan", "tab:gray", "tab:blue",
                   "tab:purple")  # not tab:olive, which is viridis' yellow-green end


def _table_order(key: tuple) -> tuple:
    """A GROUP key's place in Table 2's order: method (``METHOD_ORDER``), then size, targets, r."""
    method, targets, r, size = key
    return tables.METHOD_ORDER.get(method, len(tables.METHOD_ORDER)), method, size, targets, r


def _in_table_order(frame: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(GROUP key, rows) of each group, in Table 2's order (the legend's)."""
    return sorted(frame.groupby(lr.GROUP, sort=True), key=lambda item: _table_order(item[0]))


def _styles(groups: pd.DataFrame) -> dict[tuple, dict]:
    """A line style per group (its GROUP key): LoRA on the viridis ramp (solid), full fine-tuning
    black and dashed, each other (method, size) its own colour with its method's dash pattern, in
    Table 2's order (``present.tables.METHOD_ORDER``)."""
    groups = lr.with_size(groups)[lr.GROUP].drop_duplicates()
    keys = list(groups.itertuples(index=False, name=None))
    lora = sorted(k for k in keys if k[0] == "lora")
    cmap = plt.get_cmap("viridis")
    styles = {k: {"color": cmap(n / max(1, len(lora) - 1) * 0.9), "ls": "-", "marker": "o"} for n, k in enumerate(lora)}
    others = sorted((k for k in keys if k[0] not in ("lora", "full")), key=_table_order)
    for n, k in enumerate(others):
        styles[k] = {"color": BASELINE_COLORS[n % len(BASELINE_COLORS)], "ls": BASELINE_DASHES.get(k[0], "-"),
                     "marker": "^"}
    styles.update({k: FULL_STYLE for k in keys if k[0] == "full"})
    return styles


def lr_curves_figure(results: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Left: the main dev metric at the last evaluation against learning rate; right: the dev loss
    there. One line per (method, targets, r, size): the median over seeds, band min–max over seeds;
    full fine-tuning black and dashed, each other baseline its own colour and dash (``_styles``)."""
    _need_lr_axis(results)
    styles = _styles(results)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for ax, value, ylabel in ((axes[0], "final_value", f"dev {results['metric'].iloc[0]} (last evaluation)"),
                              (axes[1], "final_dev_loss", "dev loss (last evaluation)")):
        curves = lr.lr_curves(results, value)
        for key, curve in _in_table_order(curves):
            row, style = dict(zip(lr.GROUP, key)), styles[key]
            curve = curve.sort_values("lr")
            ax.plot(curve["lr"], curve["median"], label=_label(row), **style)
            ax.fill_between(curve["lr"], curve["min"], curve["max"], color=style["color"], alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()  # beside the panels: a dozen groups cover a panel
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    n_seeds = int(lr.with_size(results).groupby(lr.GROUP + ["lr"])["seed"].nunique().max())
    fig.suptitle(title or f"Dev metric and loss against learning rate (median over {n_seeds} seed(s); "
                          "band: min–max over seeds)", y=1.02)
    fig.tight_layout()
    return fig


def best_lr_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (method, targets, r, size): the best learning rate by the best evaluation's main metric and
    by the last evaluation's dev loss, each with the range of the per-seed best learning rates,
    the metric there (×100) and the ratio to full fine-tuning's best learning rate."""
    _need_lr_axis(results)
    by_metric = lr.best_lr(results, "value").set_index(lr.GROUP)
    by_loss = lr.best_lr(results, "final_dev_loss").set_index(lr.GROUP)
    metric = results["metric"].iloc[0]

    def span(t: pd.DataFrame) -> pd.Series:
        edge = np.where(t["at_edge"], " (edge of the grid)", "")
        return (t["best_lr"].map("{:g}".format) + " [" + t["lr_low"].map("{:g}".format) + "–"
                + t["lr_high"].map("{:g}".format) + "]" + edge)

    table = pd.DataFrame({
        f"best lr by dev {metric} [seeds' range]": span(by_metric),
        f"dev {metric} ×100 there": (100 * by_metric["best"]).round(1),
        "best lr by final dev loss [seeds' range]": span(by_loss),
        "÷ full fine-tuning's best lr": by_metric["ratio_to_full"].round(2),
        "lrs tried": by_metric["n_lr"], "seeds": by_metric["n_seeds"],
    })
    table.index = [_label(dict(zip(lr.GROUP, key))) for key in table.index]
    return table.rename_axis("cell group")


def _plain_log_labels(axis, values: pd.Series) -> None:
    """Plain numbers on a log axis, not 6×10⁻¹; the minor ticks labelled too when the data span
    under a decade (else there would be no label at all), and not when they span more (else the
    labels 60 70 80 90 run into each other)."""
    axis.set_major_formatter(PLAIN)
    positive = values[values > 0]
    narrow = positive.empty or positive.max() < 10 * positive.min()
    axis.set_minor_formatter(PLAIN if narrow else matplotlib.ticker.NullFormatter())


def learning_curves_figure(curves: pd.DataFrame, results: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Training loss against step (log–log) of each (method, targets, r, size) at its best learning
    rate (by the best evaluation's main metric), the median over seeds; full fine-tuning black and
    dashed, each other baseline its own colour and dash (``_styles``)."""
    if curves.empty:
        raise MissingData("no learning curves (metrics.jsonl has no training-loss records)")
    chosen = lr.curves_at_best_lr(curves, results, "value")
    if chosen.empty:
        raise MissingData("no learning curves for the finished cells")
    styles = _styles(chosen)
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for key, curve in _in_table_order(chosen):
        row, style = dict(zip(lr.GROUP, key)), styles[key]
        ax.plot(curve["step"], curve["train_loss"], label=f"{_label(row)}, lr {curve['lr'].iloc[0]:g}",
                **{k: v for k, v in style.items() if k != "marker"})
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, values in ((ax.xaxis, chosen["step"]), (ax.yaxis, chosen["train_loss"])):
        _plain_log_labels(axis, values)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title or "Learning curves at each group's best learning rate (median over seeds)", y=1.0)
    fig.tight_layout()
    return fig


def targets_by_rank_figure(results: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The main dev metric (best evaluation) against r for each LoRA target set, every cell group
    at its best learning rate when the sweep varies it: median over seeds, band min–max; full
    fine-tuning as a dashed line."""
    tuned = lr.at_best_lr(results, "value") if lr.has_lr_axis(results) else results
    lora = tuned[tuned["method"] == "lora"]
    if lora["targets"].nunique() < 2:
        raise MissingData("the sweep has one LoRA target set")
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for targets, t in lora.groupby("targets", sort=True):
        q = t.groupby("r")["value"].agg(["median", "min", "max"])
        line, = ax.plot(q.index, q["median"], marker="o", label=f"LoRA {targets}")
        ax.fill_between(q.index, q["min"], q["max"], color=line.get_color(), alpha=0.15)
    full = tuned[tuned["method"] == "full"]
    if not full.empty:
        ax.axhline(full["value"].median(), label="full fine-tuning", **{k: v for k, v in FULL_STYLE.items()
                                                                       if k != "marker"})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(lora["r"].unique()), [f"{r:g}" for r in sorted(lora["r"].unique())])
    ax.set_xlabel("r")
    ax.set_ylabel(f"dev {results['metric'].iloc[0]} (best evaluation)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    tuned_note = " at each group's best learning rate" if lr.has_lr_axis(results) else ""
    fig.suptitle(title or f"Target sets against r{tuned_note} (median over seeds; band: min–max)", y=1.0)
    fig.tight_layout()
    return fig
