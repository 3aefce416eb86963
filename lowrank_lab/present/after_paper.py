"""Tables in, figures out, for the analyses after the paper: how ΔW's subspaces form during training
(``dynamics``), the metric of ΔW truncated to rank k (``truncate``, Eckart–Young) and the trade-off
of scaling intruder dimensions (``mitigate``, Shuttleworth et al. 2024, their Fig. 8). No torch,
no file. Medians are over seeds with their bootstrap intervals where the table has them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lowrank_lab.present import plotting  # noqa: F401  (its rcParams apply to these figures too)
from lowrank_lab.present.select import MissingData


def _colors(ranks) -> dict[int, tuple]:
    ranks = sorted(ranks)
    cmap = plt.get_cmap("viridis")
    return {r: cmap(n / max(1, len(ranks) - 1) * 0.9) for n, r in enumerate(ranks)}


def _need(table: pd.DataFrame, what: str) -> pd.DataFrame:
    if table is None or table.empty:
        raise MissingData(f"no rows for {what}")
    return table


def _median_line(ax, g: pd.DataFrame, x: str, y: str, color, label: str, band: bool = True) -> None:
    q = g.groupby(x)[y].quantile([0.25, 0.5, 0.75]).unstack()
    ax.plot(q.index, q[0.5], "o-", ms=3, color=color, label=label)
    if band:
        ax.fill_between(q.index, q[0.25], q[0.75], color=color, alpha=0.15, lw=0)


def dynamics_figure(phi: pd.DataFrame, spectrum: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Six panels against the training step, one line per r (median over layers, matrices and
    seeds, band: interquartile range): φ(A_t, A_final); φ between each rank and the largest at one
    seed, and between seeds at one rank, with their random baselines dashed; ‖ΔW_t‖_F; stable
    rank; intruder count of W0 + ΔW_t at ε = 0.5."""
    phi, spectrum = _need(phi, "dynamics (phi)"), _need(spectrum, "dynamics (spectrum)")
    colors = _colors(spectrum["r"].unique())
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.2))
    final = phi[phi.comparison == "final"].assign(r=lambda t: t.r1)
    for r, g in final.groupby("r"):
        _median_line(axes[0, 0], g, "step", "phi", colors[r], f"r={r}")
    axes[0, 0].set(title="φ(A_t, A_final), whole subspaces", ylabel="φ")
    ranks = phi[phi.comparison == "ranks"]
    if not ranks.empty:
        top = ranks.r2.max()
        for r, g in ranks[ranks.r2 == top].groupby("r1"):
            _median_line(axes[0, 1], g, "step", "phi", colors.get(r), f"r={r} vs {top}")
            _median_line(axes[0, 1], g, "step", "phi_random", colors.get(r), "", band=False)
            axes[0, 1].lines[-1].set_linestyle("--")
    axes[0, 1].set(title="between ranks (dashed: random)", ylabel="φ(A_r, A_rmax)")
    seeds = phi[phi.comparison == "seeds"]
    for r, g in seeds.groupby("r1"):
        _median_line(axes[0, 2], g, "step", "phi", colors.get(r), f"r={r}")
        _median_line(axes[0, 2], g, "step", "phi_random", colors.get(r), "", band=False)
        axes[0, 2].lines[-1].set_linestyle("--")
    axes[0, 2].set(title="between seeds (dashed: random)", ylabel="φ(A_r, A'_r)")
    for ax, (y, name) in zip(axes[1], [("frobenius", "‖ΔW_t‖_F"), ("stable_rank", "stable rank of ΔW_t"),
                                       ("n_intruders", "intruders of W0 + ΔW_t (ε = 0.5)")], strict=True):
        for r, g in spectrum.groupby("r"):
            _median_line(ax, g, "step", y, colors[r], f"r={r}")
        ax.set(title=name, xlabel="step")
    for ax in axes.flat:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title or "How ΔW forms: median over layers, matrices and seeds (band: IQR)")
    fig.tight_layout()
    return fig


def truncation_figure(truncation: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The dev metric of W0 + ΔW_k against k (x: log2(k + 1), so k = 0, the base, sits at 0), one line
    per method and r (median over seeds, band min–max), beside the energy fraction kept."""
    t = _need(truncation, "truncation")
    t = t[t.k_rule == "k"]
    groups = sorted({(m, r) for m, r in zip(t.method, t.r, strict=True)}, key=lambda g: (g[0] != "lora", g[1]))
    colors = _colors([r for m, r in groups if m == "lora"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, r in groups:
        g = t[(t.method == method) & (t.r == r)]
        color, label = (colors[r], f"LoRA r={r}") if method == "lora" else ("black", method)
        q = g.groupby("k")
        x = np.log2(q.value.median().index + 1)
        axes[0].plot(x, q.value.median(), "o-" if method == "lora" else "s--", ms=3, color=color, label=label)
        axes[0].fill_between(x, q.value.min(), q.value.max(), color=color, alpha=0.12, lw=0)
        axes[1].plot(x, q.energy.median(), "o-" if method == "lora" else "s--", ms=3, color=color, label=label)
    ks = sorted(t.k.unique())
    for ax in axes:
        ax.set_xticks(np.log2(np.array(ks) + 1), [str(k) for k in ks], fontsize=7)
        ax.set_xlabel("k (directions kept; 0 = W0)")
    axes[0].set(ylabel=f"dev {t.metric.iloc[0]}", title="metric of W0 + ΔW_k")
    axes[1].set(ylabel="energy kept (Σ of the top k σ² over Σσ²)", title="energy fraction (Eckart–Young)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "ΔW truncated to its best rank k: median over seeds (band: min–max)")
    fig.tight_layout()
    return fig


def _interval(median: float, lo: float, hi: float, n: int, digits: int = 1) -> str:
    if n < 2 or np.isnan(lo):
        return f"{median:.{digits}f} (n = 1)"
    return f"{median:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def truncation_k_table(medians: pd.DataFrame) -> pd.DataFrame:
    """Per method and r: the median smallest k within 0.5 points of the untruncated metric, with
    its bootstrap interval over seeds, beside the median energy fraction kept at that k... (the
    energy at the k grid is in truncation_medians; here the k_min rows)."""
    m = _need(medians, "truncation medians")
    k = m[m.quantity == "k_min"]
    out = pd.DataFrame({"method": k.method, "r": k.r,
                        "smallest k within 0.5 points [95% CI]": [_interval(a, b, c, n, 0) for a, b, c, n in
                                                                 zip(k["median"], k.lo, k.hi, k.n, strict=True)],
                        "seeds": k.n})
    return out.set_index(["method", "r"])


def tradeoff_figure(tradeoff: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Shuttleworth et al.'s trade-off: the dev metric against forgetting as the intruder directions
    are scaled by λ, one panel per definition, one line per r (points λ = 1 … 0, medians over seeds
    with their bootstrap intervals as error bars)."""
    t = _need(tradeoff, "the λ trade-off")
    definitions = sorted(t.definition.unique())
    colors = _colors(t.r.unique())
    fig, axes = plt.subplots(1, len(definitions), figsize=(4.6 * len(definitions), 3.8), squeeze=False, sharey=True)
    for ax, d in zip(axes[0], definitions, strict=True):
        for r, g in t[t.definition == d].groupby("r"):
            g = g.sort_values("lam", ascending=False)
            xerr = np.abs(np.vstack([g.forgetting - g.forgetting_lo, g.forgetting_hi - g.forgetting])) if g.n.min() > 1 else None
            yerr = np.abs(np.vstack([g.value - g.value_lo, g.value_hi - g.value])) if g.n.min() > 1 else None
            ax.errorbar(g.forgetting, g.value, xerr=xerr, yerr=yerr, fmt="o-", ms=3, lw=1, capsize=2,
                        color=colors[r], label=f"r={r}")
            ax.annotate("λ=1", (g.forgetting.iloc[0], g.value.iloc[0]), fontsize=6, color=colors[r])
            ax.annotate("λ=0", (g.forgetting.iloc[-1], g.value.iloc[-1]), fontsize=6, color=colors[r])
        ax.set(title=f"intruders of {'W0 + ΔW (Shuttleworth et al.)' if d == 'W0+dW' else 'ΔW alone'}",
               xlabel="forgetting")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("dev metric")
    fig.suptitle(title or "Scaling intruder dimensions by λ: task metric against forgetting (medians over seeds)")
    fig.tight_layout()
    return fig


def tradeoff_table(tradeoff: pd.DataFrame, correlation: pd.DataFrame) -> pd.DataFrame:
    """Per definition, r and λ: the median metric and forgetting over seeds with their bootstrap
    intervals, and the median intruder count; Spearman's ρ of intruders against forgetting beside
    each definition's rows."""
    t = _need(tradeoff, "the λ trade-off")
    rho = {} if correlation is None or correlation.empty else {
        row.definition: f"ρ = {row.rho:.2f} (p = {row.p_value:.2g}, n = {row.n})" for row in correlation.itertuples()}
    out = pd.DataFrame({
        "definition": t.definition, "r": t.r, "λ": t.lam, "intruders (median)": t.n_intruders,
        "metric [95% CI]": [_interval(*v, digits=3) for v in zip(t.value, t.value_lo, t.value_hi, t.n, strict=True)],
        "forgetting [95% CI]": [_interval(*v, digits=4) for v in zip(t.forgetting, t.forgetting_lo, t.forgetting_hi, t.n,
                                                                    strict=True)],
        "intruders vs forgetting across cells (λ = 1)": [rho.get(d, "") for d in t.definition]})
    return out.set_index(["definition", "r", "λ"])
