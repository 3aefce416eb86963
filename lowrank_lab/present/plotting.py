"""Tables in, figures out: φ heat-maps in the paper's layout (Hu et al. 2021, §7.2 Fig. 3, 4;
App. H.1 Fig. 6, 7; App. H.3 Fig. 8). matplotlib only: no torch, and no file (``store.figures``
saves what is drawn here).

Every ``*_figure`` function takes the tidy tables of ``lowrank_lab.analysis`` and returns a
matplotlib Figure; which ranks, layers, seeds and matrices to show come from the table's columns
or from the keywords (``modules``, ``title``: callers such as ``analyze``/``compare`` say what is
shown). When the table lacks what a figure needs (one seed only, a single rank, ...) it raises
``MissingData`` with a sentence saying what is missing; callers turn that into a skip note.
Curves (amplification, spectra, intruders, Eckart–Young) are in ``curves``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (CI, SSH, the GPU machine)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lowrank_lab.present.select import (MissingData, first_module, middle_layer, pick_targets,  # noqa: E402
                                        select, shown_modules)

PHI_CMAP = "viridis"
_select = select
plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "figure.dpi": 100, "savefig.bbox": "tight"})


# ---------------------------------------------------------------------------------------------
# φ heat-maps: i on the y-axis (top = 1), j on the x-axis, colour bar 0–1 unless stated


def _grid(sub: pd.DataFrame) -> np.ndarray:
    return sub.pivot_table(index="i", columns="j", values="phi").to_numpy()


def phi_heatmap(ax, grid: np.ndarray, *, vmin: float = 0.0, vmax: float = 1.0, triangle: bool = False,
                title: str = "", i0: int = 1):
    """Draw an r1×r2 φ grid; `triangle` blanks j > i (the paper's zoomed panels)."""
    grid = grid.astype(float).copy()
    if triangle:
        i, j = np.indices(grid.shape)
        grid[j > i] = np.nan
    cmap = plt.get_cmap(PHI_CMAP).with_extremes(bad="white")
    r1, r2 = grid.shape
    im = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest",
                   extent=(0.5, r2 + 0.5, i0 + r1 - 0.5, i0 - 0.5))
    ax.set_title(title)
    ax.set_xlabel("j")
    ax.set_ylabel("i", rotation=0, labelpad=6)  # upright: a rotated "i" reads as a dash
    ax.set_xticks(index_ticks(r2))
    ax.set_yticks(index_ticks(r1, start=i0))
    return im


def index_ticks(n: int, start: int = 1, most: int = 9) -> list[int]:
    """1-based tick positions for an axis of n cells from `start`: the first cell always (the paper's
    i = 1, j = 1), then multiples of a round step (one dividing n when it can), every cell up to
    `most` cells, the last cell when not crowded by the previous tick. 64 → 1, 8, 16, …, 64;
    39 → 1, 5, 10, …, 35, 39."""
    end = start + n - 1
    if n <= most:
        return list(range(start, end + 1))
    steps = [s for s in (2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 200, 250, 500, 1000)
             if n / s <= most - 1]
    step = next((s for s in steps if n % s == 0), steps[0])
    ticks = [start] + [t for t in range(step * (start // step + 1), end + 1, step) if t - start >= step / 2]
    if end - ticks[-1] >= step / 2:
        ticks.append(end)
    return ticks


def _label_outer(axes) -> None:
    """Axis labels on the left column and bottom row only (tick labels stay: panels differ)."""
    for (row, col), ax in np.ndenumerate(axes):
        if col:
            ax.set_ylabel("")
        if row != axes.shape[0] - 1:
            ax.set_xlabel("")


def _colorbar(fig: Figure, im, axes, label: str = "φ") -> None:
    """One colour bar for all panels, about two panel rows tall however many rows there are."""
    fig.colorbar(im, ax=axes, shrink=min(0.9, 2.2 / axes.shape[0]), aspect=15, pad=0.01, label=label)


def _auto_vmax(values: np.ndarray) -> float:
    """A colour-bar top that shows the structure: the 99th percentile rounded up to 0.1, in [0.2, 1]."""
    finite = values[np.isfinite(values)]
    top = np.quantile(finite, 0.99) if finite.size else 1.0
    return float(min(1.0, max(0.2, np.ceil(top * 10) / 10)))


def complete_grids(t: pd.DataFrame) -> pd.DataFrame:
    """The rows of complete φ grids (a table that stores only the diagonal of some pairs says so in
    its ``grid`` column; older tables hold complete grids only)."""
    return t[t["grid"] == "complete"] if "grid" in t else t


def _phi_choice(phi: pd.DataFrame, comparison: str, side: str, targets: str | None,
                modules: Sequence[str] | None = None) -> tuple[pd.DataFrame, str]:
    t = complete_grids(_select(phi, comparison=comparison, side=side))
    if t.empty:
        what = {"ranks": "two ranks at one seed", "seeds": "two seeds at one rank"}[comparison]
        raise MissingData(f"the sweep has no {what} to compare (side {side})")
    targets = targets or (pick_targets(t, modules) if modules else pick_targets(t))
    return _select(t, targets=targets), targets


def _layers_with(t: pd.DataFrame, layers: Sequence[int] | None, modules: Sequence[str]) -> list[int]:
    """`layers` (default: the middle one) that have φ for every matrix in `modules`: a panel with
    nothing to show is dropped, and MissingData when no layer is left."""
    has = [int(x) for x in t["layer"].dropna().unique()
           if all(not _select(t, layer=x, module=m).empty for m in modules)]
    if not has:
        raise MissingData(f"no layer has φ for every one of ΔW{', ΔW'.join(modules)}")
    wanted = list(layers) if layers is not None else [middle_layer(t["layer"].dropna())]
    kept = [layer for layer in wanted if layer in has]
    return kept or [middle_layer(has)]


def rank_pair(t: pd.DataFrame, r_pair: tuple[int, int] | None = None) -> tuple[int, int]:
    """(r1, r2): r2 the largest rank, r1 = 8 (the paper's pair when r2 = 64) when the sweep has it, else
    the largest rank below r2."""
    pairs = set(zip(t["r1"], t["r2"], strict=True))
    if r_pair is not None:
        if tuple(r_pair) not in pairs:
            raise MissingData(f"no φ between r={r_pair[0]} and r={r_pair[1]}; available: {sorted(pairs)}")
        return tuple(r_pair)
    r2 = max(p[1] for p in pairs)
    smaller = sorted(p[0] for p in pairs if p[1] == r2)
    r1 = 8 if 8 in smaller else smaller[-1]
    return int(r1), int(r2)


def phi_ranks_figure(phi: pd.DataFrame, layers: Sequence[int] | None = None, *, side: str = "A",
                     targets: str | None = None, r_pair: tuple[int, int] | None = None,
                     seed: int | None = None, modules: Sequence[str] | None = None,
                     title: str | None = None) -> Figure:
    """Fig. 3 (one layer: the middle one) and Fig. 6 (several layers, one row each):
    φ(A_{r1}, A_{r2}, i, j) for ΔWq and ΔWv (or `modules`), full r1×r2 grids, then the r1×r1 corner
    with j > i blank. Layers without φ for every shown matrix are left out; `title` replaces the
    default suptitle (which says ranks, targets, seed and side)."""
    t, targets = _phi_choice(phi, "ranks", side, targets, modules)
    seed = int(t["seed1"].min()) if seed is None else seed
    r1, r2 = rank_pair(t, r_pair)
    t = _select(t, seed1=seed, r1=r1, r2=r2)
    modules = shown_modules(t, modules)
    layers = _layers_with(t, layers, modules)
    fig, axes = plt.subplots(len(layers), 2 * len(modules), squeeze=False,
                             figsize=(3.0 * 2 * len(modules), 1.9 * len(layers) + 0.8),
                             gridspec_kw={"width_ratios": [3] * len(modules) + [1.3] * len(modules)},
                             layout="constrained")
    im = None
    for row, layer in enumerate(layers):
        for col, module in enumerate(modules):
            grid = _grid(_select(t, layer=layer, module=module))
            name = f"L{layer} ΔW{module}"
            im = phi_heatmap(axes[row, col], grid, title=f"{name}: φ(A_r={r1}, A_r={r2})")
            phi_heatmap(axes[row, len(modules) + col], grid[:, :r1], triangle=True, title=f"{name}: j ≤ {r1}")
    _label_outer(axes)
    _colorbar(fig, im, axes)
    fig.suptitle(title or f"Subspace similarity between r={r1} and r={r2} (targets {targets}, seed {seed}, "
                          f"side {side})")
    return fig


def phi_seeds_figure(phi: pd.DataFrame, layers: Sequence[int] | None = None, *, side: str = "A",
                     targets: str | None = None, r: int | None = None, random_panel: bool | None = None,
                     modules: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Fig. 4 (middle layer: ΔWq, ΔWv and two random Gaussian matrices of the same shape) and Fig. 7
    (several layers, no random panel): φ(A_r, A'_r, i, j) between two seeds at one rank (or any two
    adapters of one rank: pass `title`, which replaces the default suptitle naming the seeds)."""
    t, targets = _phi_choice(phi, "seeds", side, targets, modules)
    r = int(t["r1"].max()) if r is None else r
    t = _select(t, r1=r)
    if t.empty:
        raise MissingData(f"no two seeds at r={r}")
    s1, s2 = int(t["seed1"].min()), int(t["seed2"].min())
    t = _select(t, seed1=s1, seed2=s2)
    random_panel = layers is None if random_panel is None else random_panel
    modules = shown_modules(t, modules)
    layers = _layers_with(t, layers, modules)
    rand = _select(phi, comparison="random", side=side, r1=r)
    grids = {(layer, m): _grid(_select(t, layer=layer, module=m)) for layer in layers for m in modules}
    vmax = _auto_vmax(np.concatenate([g.ravel() for g in grids.values()]))
    # One layer (Fig. 4): ΔWq, ΔWv, Random in a row. Several (Fig. 7): a row per matrix kind and
    # a column per layer, so that a layer's ΔWq and ΔWv sit one above the other.
    panels = [[(f"L{layer} ΔW{m}", grids[layer, m]) for m in modules] for layer in layers]
    if len(layers) > 1:
        panels = [list(row) for row in zip(*panels, strict=True)]
    elif random_panel and not rand.empty:
        panels[0].append(("Random (Gaussian)", _grid(rand[rand["dim"] == rand["dim"].iloc[0]])))
    nrows, ncols = len(panels), len(panels[0])
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(2.9 * ncols + 0.8, 2.7 * nrows + 0.5),
                             layout="constrained")
    im = None
    for (row, col), ax in np.ndenumerate(axes):
        name, grid = panels[row][col]
        im = phi_heatmap(ax, grid, vmax=vmax, title=name)
    _label_outer(axes)
    _colorbar(fig, im, axes)
    fig.suptitle(title or f"φ(A_r={r}, A'_r={r}, i, j): seed {s1} vs seed {s2} (targets {targets}, side {side})")
    return fig


def phi_w0_figure(phi_w0: pd.DataFrame, layer: int | None = None, *, module: str | None = None, side: str = "A",
                  targets: str | None = None, seed: int | None = None, max_panels: int = 3,
                  title: str | None = None) -> Figure:
    """Fig. 8: φ(W0, A_r, i, j), i over W0's top singular directions (y), j over the adapter's (x),
    for the paper's ranks 4, 8 and 64 when the sweep has them (else the largest `max_panels`), and
    a random basis of the largest rank. `module`: Wq when the table has it, else its first matrix."""
    t = complete_grids(_select(phi_w0, side=side))
    if t.empty:
        raise MissingData(f"no W0-vs-ΔW table for side {side}")
    module = module or first_module(t)
    t = _select(t, targets=targets or pick_targets(t, (module,)))
    seed = int(t["seed"].min()) if seed is None else seed
    layer = middle_layer(t["layer"].dropna()) if layer is None else layer
    t = _select(t, seed=seed, layer=layer, module=module)
    if t.empty:
        raise MissingData(f"no W0-vs-ΔW φ for layer {layer}, ΔW{module}")
    ranks = sorted(int(r) for r in t["r2"].unique())
    ranks = [4, 8, 64] if {4, 8, 64} <= set(ranks) else ranks[-max_panels:]
    panels = [(f"φ(W{module}, A_r={r})", _grid(_select(t, r2=r, source="adapter"))) for r in ranks]
    panels.append((f"φ(W{module}, A_rand), r={ranks[-1]}", _grid(_select(t, r2=ranks[-1], source="random"))))
    panels = [(name, grid) for name, grid in panels if grid.size]  # a panel with nothing to show is dropped
    values = np.concatenate([g.ravel() for _, g in panels])
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels) + 1, 3.4), squeeze=False,
                             layout="constrained")
    im = None
    for ax, (name, grid) in zip(axes[0], panels, strict=True):
        im = phi_heatmap(ax, grid, vmin=vmin, vmax=vmax, title=name)
        ax.set_xlabel("j (top-j directions of A)")
    _label_outer(axes)
    axes[0, 0].set_ylabel(f"i (top-i directions of W{module})", rotation=90)
    _colorbar(fig, im, axes)
    which = "right" if side in ("A", "dW_right") else "left"
    fig.suptitle(title or f"φ(W{module}, A_r, i, j): top-i {which} singular directions of W{module} vs top-j "
                          f"of the adapter (side {side}), layer L{layer}, seed {seed}")
    return fig
