"""Tables of results (presentation): tidy tables in, display tables out, as Markdown, LaTeX and CSV.

Each ``*_table`` function returns a small DataFrame shaped like one of the paper's tables
(Hu et al. 2021: Table 2 method × task, Table 5 fixed budget, Table 6 rank × target set, Table 7
projections, Table 18 metric against r) with numbers, not strings; ``format_cells`` turns a
(median, spread) pair into "0.833 ± 0.004", where the spread is half the range over seeds.
``write_tables`` writes them all for a sweep (``lowrank-lab tables SWEEP``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lowrank_lab.analysis.tables import results_table

FORMATS = ("md", "tex", "csv")


def rank_by_target(results: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 6's shape: median main metric over seeds, rows = target set, columns = r."""
    lora = results[results["method"] == "lora"]
    return lora.pivot_table(index="targets", columns="r", values="value", aggfunc="median")


def sweep_table(sweep: Path) -> str:
    """A one-screen text table of the sweep's main metric by target set × rank (median over seeds)."""
    results = results_table(sweep)
    if results.empty:
        return "no finished cells"
    metric = results["metric"].iloc[0]
    lines = [f"{metric} (median over seeds) by target set × r:",
             rank_by_target(results).to_string(float_format=lambda v: f"{v:.4f}")]
    baselines = results[results["method"] != "lora"]
    if not baselines.empty:
        lines += ["", baselines.groupby("method")["value"].median().to_string(float_format=lambda v: f"{v:.4f}")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The paper's table shapes


def _median_spread(values: pd.Series) -> str:
    """"median ± half-range" over seeds (a single seed: the value alone)."""
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.median():.4f} ± {(values.max() - values.min()) / 2:.4f}"


def target_order(targets: str) -> tuple:
    """The paper's row order: fewer matrix kinds first, then q, k, v, o ("q" < "v" < "q,v" < "q,k,v,o")."""
    kinds = targets.split(",") if targets else []
    return len(kinds), tuple("qkvo".find(k) if k in ("q", "k", "v", "o") else 4 for k in kinds), targets


def _in_target_order(table: pd.DataFrame, level: str = "targets") -> pd.DataFrame:
    keys = table.index.get_level_values(level) if level in (table.index.names or []) else table[level]
    order = sorted(range(len(table)), key=lambda n: target_order(keys[n]))
    return table.iloc[order]


def rank_target_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table 6: main metric, median ± half-range over seeds; rows = target set (the paper's
    order: q, q,v, q,k,v,o), columns = r."""
    lora = results[results["method"] == "lora"]
    table = lora.groupby(["targets", "r"])["value"].apply(_median_spread).unstack("r")
    return _in_target_order(table.rename_axis(index="targets", columns="r").fillna(""))


def budget_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table 5: one rank per target set such that r × (number of matrix kinds) is the same budget.
    The budget covering the most target sets is chosen (ties: the largest); empty if no budget is
    shared by two sets."""
    lora = results[results["method"] == "lora"].copy()
    if lora.empty:
        return pd.DataFrame()
    lora["budget"] = lora["r"] * lora["targets"].str.count(",").add(1)
    coverage = lora.groupby("budget")["targets"].nunique()
    coverage = coverage[coverage >= 2]
    if coverage.empty:
        return pd.DataFrame()
    budget = max(coverage.index, key=lambda b: (coverage[b], b))
    chosen = lora[lora["budget"] == budget]
    table = _in_target_order(chosen.groupby(["targets", "r"])["value"].apply(_median_spread).reset_index())
    table = table.reset_index(drop=True)
    if "trainable_adapter" in chosen:  # the paper's budget is a parameter count (18M on GPT-3)
        params = chosen.groupby("targets")["trainable_adapter"].first()
        table.insert(2, "trainable excl. head", table["targets"].map(params))
    table.insert(0, "budget (r × matrices)", budget)
    return table.rename(columns={"value": results["metric"].iloc[0]})


def metric_vs_rank_table(results: pd.DataFrame, targets: str | None = None) -> pd.DataFrame:
    """Table 18: every dev metric's median over seeds against r for one target set (default: q,v
    as the paper's GPT-2 sweep, else the closest)."""
    lora = results[results["method"] == "lora"]
    if lora.empty:
        return pd.DataFrame()
    from lowrank_lab.present.plotting import pick_targets

    targets = targets or pick_targets(lora)
    metrics = [c for c in lora.columns if c.startswith("dev_")]
    table = lora[lora["targets"] == targets].groupby("r")[metrics].median()
    return table.rename(columns=lambda c: c.removeprefix("dev_")).rename_axis(f"r ({targets})")


def method_table(results: pd.DataFrame, lora: list[tuple[str, int]] | None = None) -> pd.DataFrame:
    """Table 2: rows = method (full fine-tuning, BitFit, head only, then LoRA: every target set and
    r, or only the (targets, r) pairs in `lora`, e.g. [("q,v", 8)] as the paper), trainable
    parameters (with the classifier head; without it too when the results have the column, the
    paper's count), then the main metric per task (median ± half-range over seeds). `results` may
    hold several sweeps, one task each."""
    if lora is not None:
        keep = results["method"] != "lora"
        for targets, r in lora:
            keep |= (results["method"] == "lora") & (results["targets"] == targets) & (results["r"] == r)
        results = results[keep]
    names = {"full": "Full fine-tuning", "bitfit": "BitFit", "head": "Head only"}
    rows = results.assign(method_name=[names.get(m, f"LoRA {t} r={r}") for m, t, r in
                                       zip(results["method"], results["targets"], results["r"], strict=True)])
    order = {"full": 0, "bitfit": 1, "head": 2, "lora": 3}
    rows = rows.assign(order=rows["method"].map(order), target_order=rows["targets"].map(target_order))
    rows = rows.sort_values(["order", "target_order", "r"], kind="stable")
    columns = {"trainable_total": "trainable parameters"}
    if "trainable_adapter" in rows:
        columns["trainable_adapter"] = "trainable excl. head"
    params = rows.groupby("method_name", sort=False)[list(columns)].first().rename(columns=columns)
    values = rows.groupby(["method_name", "task"], sort=False)["value"].apply(_median_spread).unstack("task")
    table = pd.concat([params, values[list(dict.fromkeys(rows["task"]))]], axis=1)
    return table.rename_axis("method")


def storage_table(shapes: pd.DataFrame, ranks) -> pd.DataFrame:
    """Parameters per adapted matrix: dense ΔW d·k against LoRA's r·(d + k) and the reduction
    1 − r(d + k)/(dk) (Hu et al. 2021, §4.1); `shapes` has columns module, d, k.
    E.g. d = k = 512, r = 8: 262,144 against 8,192, a 96.9% reduction."""
    rows = []
    kinds = shapes[["module", "d", "k"]].drop_duplicates().sort_values("module", key=lambda m: m.map("qkvo".find))
    for (module, d, k) in kinds.itertuples(index=False):
        for r in sorted(set(int(x) for x in ranks)):
            dense, lora = int(d) * int(k), r * (int(d) + int(k))
            rows.append({"matrix": f"W{module}", "d": int(d), "k": int(k), "r": r, "dense d·k": dense,
                         "LoRA r(d+k)": lora, "reduction %": round(100 * (1 - lora / dense), 1)})
    return pd.DataFrame(rows)


def table7(amp: pd.DataFrame, layer: int | None = None, module: str = "q", targets: str | None = None) -> pd.DataFrame:
    """Table 7: ‖UᵀW0Vᵀ‖_F with U, V from ΔW, from W0 and random, ‖W0‖_F, ‖ΔW‖_F and the
    amplification factor, per r (columns), at one layer and matrix, median over seeds."""
    lora = amp[amp["method"] == "lora"]
    if lora.empty:
        return pd.DataFrame()
    from lowrank_lab.present.plotting import middle_layer, pick_targets  # pandas-only helpers; keeps one layer rule

    targets = targets or pick_targets(lora)
    layer = middle_layer(lora["layer"].dropna()) if layer is None else layer
    t = lora[(lora["targets"] == targets) & (lora["layer"] == layer) & (lora["module"] == module)]
    quantities = {"proj_delta_w": "‖UᵀW0Vᵀ‖_F, U,V of ΔW", "proj_w0": "‖UᵀW0Vᵀ‖_F, U,V of W0",
                  "proj_random": "‖UᵀW0Vᵀ‖_F, random U,V", "norm_w0": "‖W0‖_F",
                  "norm_delta_w": "‖ΔW‖_F (α/r included)", "amplification": "amplification ‖ΔW‖_F/‖UᵀW0Vᵀ‖_F"}
    table = t.groupby("r")[list(quantities)].median().T.rename(index=quantities)
    table = table.rename(columns=lambda r: f"r={r}")
    table.columns.name = None
    return table.rename_axis(f"L{layer} W{module} ({targets})")


# ---------------------------------------------------------------------------------------------
# Rendering


def to_markdown(table: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    """A GitHub Markdown table (index as the first column); no tabulate dependency."""
    frame = table.reset_index() if table.index.name or not isinstance(table.index, pd.RangeIndex) else table

    def cell(v) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        if isinstance(v, int) and abs(v) >= 10_000:
            return f"{v:,}"
        return str(v)

    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "md":
        return to_markdown(table)
    if fmt == "tex":
        return table.to_latex(float_format=lambda v: f"{v:.4g}")
    if fmt == "csv":
        return table.to_csv()
    raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")


def sweep_tables(sweep: Path) -> dict[str, pd.DataFrame]:
    """Every table of a sweep, by file name; those whose inputs are missing are left out."""
    from lowrank_lab.analysis import tables as an

    results = an.results_table(Path(sweep))
    tables = {"table2_methods": method_table(results), "table5_budget": budget_table(results),
              "table6_rank_by_target": rank_target_table(results),
              "table18_metric_vs_rank": metric_vs_rank_table(results)}
    if an.table_path(sweep, an.AMPLIFICATION).exists():
        amp = an.read_table(sweep, an.AMPLIFICATION)
        tables["table7_projections"] = table7(amp)
        tables["storage"] = storage_table(amp, amp["r"].unique())
    return {name: t for name, t in tables.items() if not t.empty}


def save_table(table: pd.DataFrame, name: str, out_dir: Path) -> list[Path]:
    """Write `table` as <out_dir>/<name>.{md,tex,csv}; the table counterpart of save_figure."""
    from lowrank_lab.store import files
    from lowrank_lab.store import runs

    paths = [Path(out_dir) / f"{name}.{fmt}" for fmt in FORMATS]
    for path, fmt in zip(paths, FORMATS, strict=True):
        files.write_text(path, render(table, fmt))
    return paths


def write_tables(sweep: Path, ours: dict[str, pd.DataFrame] | None = None) -> list[Path]:
    """Write the per-cell results cache (analysis/results.csv, which the table scripts read) and
    every table as <analysis>/tables/<name>.{md,tex,csv}; `ours`: the tables when the caller has
    already built them with ``sweep_tables``. Returns the paths."""
    from lowrank_lab.store import runs
    from lowrank_lab.analysis.sweep import compute_results

    folder = runs.analysis_dir(Path(sweep)) / "tables"
    paths = compute_results(Path(sweep))
    ours = sweep_tables(sweep) if ours is None else ours
    return paths + [p for name, table in ours.items() for p in save_table(table, name, folder)]
