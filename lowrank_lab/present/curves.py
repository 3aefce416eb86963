"""Tables in, curve figures out: amplification against r (Hu et al. 2021, §7.3, App. H.4), spectra
and energy of ΔW, intruder dimensions against ε (Shuttleworth et al. 2024) and Eckart–Young curves
of full fine-tuning's ΔW. No torch, no file. Every figure takes `title` (replacing the default
suptitle, which says what is pooled) so that ``analyze``/``compare`` title what they show.
"""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from lowrank_lab.present import plotting  # noqa: F401  (its rcParams apply to these figures too)
from lowrank_lab.present.select import MissingData, first_module, middle_layer, pick_targets, pooled
from lowrank_lab.present.select import select as _select
from lowrank_lab.spec import kind_order

# Hu et al. 2021, Table 7 / App. H.4: GPT-3 175B, layer 48, ΔWq (6.91/0.32 and 3.57/1.90).
PAPER_AMPLIFICATION = {4: 21.5, 64: 3.57 / 1.90}


def _rank_colors(ranks) -> dict[int, tuple]:
    ranks = sorted(ranks)
    cmap = plt.get_cmap("viridis")
    return {r: cmap(n / max(1, len(ranks) - 1) * 0.9) for n, r in enumerate(ranks)}


def _plain_log2_ticks(axis, values) -> None:
    """Log-2 axis ticked at the sweep's own values (1, 2, 4, …) as plain integers, not 2^n."""
    axis.set_major_locator(matplotlib.ticker.FixedLocator(sorted(set(int(v) for v in values))))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _lora(table: pd.DataFrame) -> pd.DataFrame:
    t = table[table["method"] == "lora"]
    if t.empty:
        raise MissingData("no LoRA cells in the table")
    return t


def amplification_figure(amp: pd.DataFrame, *, paper: bool = True, title: str | None = None) -> Figure:
    """Amplification factor ‖ΔW‖_F / ‖Uᵀ W0 Vhᵀ‖_F against r (log–log), one panel per target set,
    one line per matrix kind: median over layers and seeds, band = interquartile range.
    The paper's two GPT-3 values (r = 4: 21.5, r = 64: ≈1.9) as stars for reference.
    A table of one rank (one adapter) is drawn against the layer instead: one point per r would
    be a panel with nothing to show."""
    amp = _lora(amp)
    if amp["r"].nunique() == 1:
        return _amplification_by_layer(amp, title)
    sets = sorted(amp["targets"].unique(), key=len)
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.2), squeeze=False, sharey=True)
    for ax, targets in zip(axes[0], sets, strict=True):
        t = amp[amp["targets"] == targets]
        for module in sorted(t["module"].unique(), key=kind_order):
            g = t[t["module"] == module]
            q = g.groupby("r")["amplification"].quantile([0.25, 0.5, 0.75]).unstack()
            line, = ax.plot(q.index, q[0.5], marker="o", label=f"ΔW{module}")
            ax.fill_between(q.index, q[0.25], q[0.75], color=line.get_color(), alpha=0.2)
        if paper:
            ax.plot(list(PAPER_AMPLIFICATION), list(PAPER_AMPLIFICATION.values()), "k*", ms=10,
                    label="paper (GPT-3 L48 ΔWq)")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log2_ticks(ax.xaxis, [*t["r"], *(PAPER_AMPLIFICATION if paper else [])])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("r")
        ax.set_title(f"targets {targets}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")  # the factor falls with r: the upper right is empty
    axes[0, 0].set_ylabel("amplification ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F")
    fig.suptitle(title or f"Amplification factor against r ({pooled(amp)}; band: interquartile range; "
                          "ΔW includes α/r)", y=1.02)
    return fig


def _amplification_by_layer(amp: pd.DataFrame, title: str | None) -> Figure:
    """One rank: amplification per layer, one line per matrix kind (median over seeds if several)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for module in sorted(amp["module"].unique(), key=kind_order):
        g = amp[amp["module"] == module].groupby("layer")["amplification"].median()
        ax.plot(g.index.astype(int), g.values, marker="o", label=f"ΔW{module}")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="layer", ylabel="amplification ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(title or f"Amplification factor per layer, r = {int(amp['r'].iloc[0])} (ΔW includes α/r)")
    return fig


def spectrum_figure(spectrum: pd.DataFrame, metrics: pd.DataFrame, layer: int | None = None, *,
                    module: str | None = None, targets: str | None = None, title: str | None = None) -> Figure:
    """(a) singular values σ_n of ΔW at one layer and matrix (ΔWq when adapted, else the first
    matrix the table has), one line per r, full fine-tuning in black; (b) cumulative energy Σσ²
    fraction; (c) rank_90 and stable rank against r, median over layers and seeds, full
    fine-tuning's rank_90 as a dashed line — dropped when the table has one rank only."""
    lora = _lora(spectrum)
    targets = targets or pick_targets(lora)
    module = module or first_module(_select(lora, targets=targets))
    layer = middle_layer(lora["layer"].dropna()) if layer is None else layer
    seed = int(lora["seed"].min())
    t = _select(lora, targets=targets, layer=layer, module=module, seed=seed)
    full = _select(spectrum, method="full", layer=layer, module=module, seed=seed)
    if t.empty:
        raise MissingData(f"no spectrum for layer {layer}, ΔW{module}, targets {targets}")
    colors = _rank_colors(t["r"].unique())
    m = _select(_lora(metrics), targets=targets)
    several_r = m["r"].nunique() > 1  # panel (c) against r needs two ranks
    fig, axes = plt.subplots(1, 3 if several_r else 2, figsize=(12 if several_r else 8, 3.4))
    for r, g in t.groupby("r"):
        axes[0].plot(g["n"], g["sigma"], marker=".", color=colors[r], label=f"r={r}")
        axes[1].plot(g["n"], g["energy"], marker=".", color=colors[r], label=f"r={r}")
    if not full.empty:
        axes[0].plot(full["n"], full["sigma"], color="k", lw=1, label="full FT")
        axes[1].plot(full["n"], full["energy"], color="k", lw=1, label="full FT")
    axes[0].set(yscale="log", xscale="log", xlabel="n", ylabel="σ_n(ΔW)", title=f"L{layer} ΔW{module}: singular values")
    axes[1].set(xscale="log", xlabel="n", ylabel="Σ_{m≤n} σ_m² / Σ σ²", title="cumulative energy", ylim=(0, 1.02))
    axes[1].axhline(0.9, color="grey", ls=":", lw=1)
    if several_r:
        _rank_panel(axes[2], m, metrics[metrics["method"] == "full"], targets)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"Spectrum of ΔW (targets {targets}, seed {seed}; ΔW includes α/r)", y=1.02)
    return fig


def _rank_panel(ax, lora: pd.DataFrame, full: pd.DataFrame, targets: str) -> None:
    """rank_90, stable and effective rank of ΔW against r (median over layers and seeds), the line
    rank = r, and full fine-tuning's median rank_90 dashed."""
    med = lora.groupby("r")[["rank_90", "stable_rank", "effective_rank"]].median()
    for column, style in (("rank_90", "o-"), ("stable_rank", "s--"), ("effective_rank", "^:")):
        ax.plot(med.index, med[column], style, label=column)
    ax.plot(med.index, med.index, color="grey", lw=0.8, label="r")
    if not full.empty:
        ax.axhline(full["rank_90"].median(), color="k", ls="--", lw=1, label="full FT rank_90")
    ax.set(yscale="log", xlabel="r", ylabel="directions", title=f"rank of ΔW (targets {targets}, {pooled(lora)})")
    ax.set_xscale("log", base=2)
    _plain_log2_ticks(ax.xaxis, med.index)
    top = max(float(med.to_numpy().max()), float(med.index.max()), *([full["rank_90"].median()] if not full.empty else []))
    _plain_log2_ticks(ax.yaxis, [2 ** k for k in range(math.ceil(math.log2(max(top, 1))) + 1)])  # 1, 2, 4, …


def intruders_figure(intr: pd.DataFrame, *, targets: str | None = None, title: str | None = None) -> Figure:
    """Intruder dimensions among the top-10 singular vectors of W0 + ΔW against ε, summed over the
    adapted matrices and averaged over seeds, one line per r; full fine-tuning over the same
    matrices in black (Shuttleworth et al. 2024, Fig. 1's shape)."""
    lora = _lora(intr)
    targets = targets or pick_targets(lora)
    t = lora[lora["targets"] == targets]
    labels = set(t["label"])
    colors = _rank_colors(t["r"].unique())
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for r, g in t.groupby("r"):
        total = g.groupby(["seed", "epsilon"])["n_intruders"].sum().groupby("epsilon").mean()
        ax.plot(total.index, total.values, marker="o", color=colors[r], label=f"LoRA r={r}")
    full = intr[(intr["method"] == "full") & intr["label"].isin(labels)]
    if not full.empty:
        total = full.groupby(["seed", "epsilon"])["n_intruders"].sum().groupby("epsilon").mean()
        ax.plot(total.index, total.values, "k--", marker="x", label="full FT")
    ax.set(xlabel="ε (threshold on max |cos|)", ylabel=f"intruders (sum over {len(labels)} matrices)",
           title=title or f"Intruder dimensions, targets {targets}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def eckart_young_figure(ey: pd.DataFrame, *, targets: str | None = None, title: str | None = None) -> Figure:
    """Relative error of the best rank-k approximation of full fine-tuning's ΔW against k (one
    thin line per layer, median thick), with the sweep's ranks marked and each LoRA adapter's
    ‖ΔW_full − ΔW_lora‖_F / ‖ΔW_full‖_F at k = r (median over layers), one panel per matrix kind."""
    curve = ey[ey["source"] == "best_rank_k"]
    if curve.empty:
        raise MissingData("no full fine-tuning cell in the sweep, so no Eckart–Young curve")
    curve = curve[curve["seed"] == curve["seed"].min()]
    lora = ey[(ey["source"] != "best_rank_k") & (ey["seed"] == curve["seed"].min())]
    if not lora.empty:
        lora = lora[lora["lora_targets"] == (targets or pick_targets(lora.rename(columns={"lora_targets": "targets"})))]
    modules = list(dict.fromkeys(curve["module"]))
    curve = curve[curve["k"] >= 1]  # k = 0 (error 1) cannot sit on a log axis
    kmax = int(curve["k"].max())
    top = max(1.5, 2 * float(lora["rel_error"].max()) if not lora.empty else 0.0)
    fig, axes = plt.subplots(1, len(modules), figsize=(3.3 * len(modules), 3.3), squeeze=False, sharey=True)
    for ax, module in zip(axes[0], modules, strict=True):
        c = curve[curve["module"] == module]
        for _, g in c.groupby("layer"):
            ax.plot(g["k"], g["rel_error"], color="grey", lw=0.6, alpha=0.6)
        med = c.groupby("k")["rel_error"].median()
        ax.plot(med.index, med.values, color="k", lw=2, label="full FT, best rank k (layers: grey)")
        for r in sorted(ey.loc[ey["source"] != "best_rank_k", "k"].unique()):
            ax.axvline(r, color="tab:blue", ls=":", lw=0.8)
        ax.axhline(1.0, color="grey", ls="--", lw=0.8)
        pts = lora[lora["module"] == module].groupby("k")["rel_error"].median()
        if not pts.empty:
            ax.plot(pts.index, pts.values, "o", color="tab:red", label="LoRA ΔW at k = r (same seed)")
        ax.set(xlabel="k", title=f"ΔW{module}", xscale="log", yscale="log", xlim=(0.8, kmax * 1.25),
               ylim=(0.01, top))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(True, which="major", alpha=0.3)
    axes[0, 0].set_ylabel("‖ΔW_full − X‖_F / ‖ΔW_full‖_F")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title or "Eckart–Young: best rank-k error of full fine-tuning's ΔW, and each LoRA ΔW's distance "
                 "from it (dotted: the sweep's ranks; dashed: ‖X‖ = 0)", y=1.03)
    return fig
