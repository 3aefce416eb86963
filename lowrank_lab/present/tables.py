"""Tables of results (presentation): tidy tables in, display tables out, as Markdown, LaTeX and CSV
text (``store.figures`` writes the text; this module opens no file and imports no torch).

Each ``*_table`` function returns a small DataFrame shaped like one of the paper's tables
(Hu et al. 2021: Table 2 method × task, Table 5 fixed budget, Table 6 rank × target set, Table 7
projections, Table 18 metric against r). A metric over seeds is the string "0.8333 ± 0.0040":
the median ± half the range over seeds. ``in_percent`` puts metrics in the paper's unit (×100,
one decimal, "83.3 ± 0.4"); every other number goes through ``number`` (one format for all).
"""

from __future__ import annotations

import csv
import io

import pandas as pd

from lowrank_lab.maths.metrics import FRACTIONS
from lowrank_lab.maths.nlg_metrics import E2E_METRICS, NAMES, POINTS
from lowrank_lab.present.select import pick_targets
from lowrank_lab.spec import ALL_LINEAR, kind_order

FORMATS = ("md", "tex", "csv")
SEED_AXES = ("seed",)  # what a table's median is taken over; every other varying axis is a row or column
AXES = ("task", "method", "targets", "r", "alpha", "lr", "scaling_rule", "init", "size")  # the axes a sweep can vary


def number(v) -> str:
    """The one number format of every table: integers with thousands separators from 10,000,
    other numbers with 4 significant digits (no exponent between 0.001 and 10,000), NaN as ""."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "" if v is None or v is pd.NA else str(v)
    if v != v:  # NaN
        return ""
    if isinstance(v, int) or (float(v).is_integer() and abs(v) >= 10_000):
        return f"{int(v):,}" if abs(v) >= 10_000 else str(int(v))
    if v != 0 and not 1e-3 <= abs(v) < 10_000:
        return f"{v:.3e}"
    return f"{v:.4g}"


def in_percent(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with every 0–1 score ×100, as the paper prints accuracy, F1, MCC and correlations
    (Tables 2, 5, 6): the dev metrics among ``FRACTIONS``, and the main metric (`value`) of the rows
    whose `metric` is one (every row when there is no `metric` column); such a column or metric
    name gains " (%)". BLEU and ROUGE-L are on the paper's 0–100 scale already; losses and
    perplexity have no percent."""
    fractions = [c for c in results.columns if c.startswith("dev_") and c.removeprefix("dev_") in FRACTIONS]
    out = results.assign(**{c: results[c] * 100 for c in fractions})
    main = results["metric"].isin(FRACTIONS) if "metric" in results else pd.Series(True, index=results.index)
    for column in ("value", "final_value", "val_value"):  # the best evaluation's, the last's, the held-out split's
        if column in out:
            out[column] = out[column].where(~main, out[column] * 100)
    if "metric" in out:
        out["metric"] = out["metric"].astype(str).where(~main, out["metric"].astype(str) + " (%)")
    return out.rename(columns={c: f"{c} (%)" for c in fractions})


def in_points(name) -> bool:
    """Whether a column or metric name is on the paper's 0–100 scale: "… (%)" (``in_percent``), or
    BLEU and ROUGE-L, which are on it already."""
    name = str(name)
    return name.endswith("(%)") or name.removeprefix("dev_") in POINTS


def one_decimal(table: pd.DataFrame) -> pd.DataFrame:
    """Float cells of the 0–100 columns (``in_points``) as "91.0", the paper's one decimal (``number``
    would drop a trailing zero); every other float through ``number`` (a loss of 0.0735 is no 0.1)."""
    def cells(col: pd.Series) -> pd.Series:
        if not pd.api.types.is_float_dtype(col):
            return col
        return col.map(lambda v: f"{v:.1f}") if in_points(col.name) else col.map(number)
    return table.apply(cells)


def varying_axes(results: pd.DataFrame, axes=AXES) -> list[str]:
    """The axes of `axes` that take more than one value in `results` (the seed is never one)."""
    return [a for a in axes if a in results and results[a].nunique(dropna=False) > 1]


def sweep_table(results: pd.DataFrame) -> str:
    """A one-screen text table of the sweep's main metric, the median over seeds only: LoRA cells
    grouped by every axis that varies (targets, scaling rule, init, α, task, …) × r, baselines by
    method; the header names the axes held fixed and the seeds pooled (``lowrank-lab rank-sweep``)."""
    if results.empty:
        return "no finished cells"
    metric = results["metric"].iloc[0]
    lora, baselines = results[results["method"] == "lora"], results[results["method"] != "lora"]
    seeds = ", ".join(str(s) for s in sorted(results["seed"].unique()))
    lines = [f"{metric}, median over seeds {{{seeds}}}; nothing else pooled:"]
    if not lora.empty:
        rows = list(dict.fromkeys(["targets", *[a for a in varying_axes(lora) if a not in ("method", "r")]]))
        fixed = [f"{a} {lora[a].iloc[0]}" for a in AXES if a in lora and a not in (*rows, "method", "r")
                 and lora[a].nunique() == 1]
        table = _in_target_order(lora.pivot_table(index=rows, columns="r", values="value", aggfunc="median"))
        lines += [f"LoRA by {' × '.join(rows)} × r" + (f" ({', '.join(fixed)})" if fixed else "") + ":",
                  table.to_string(float_format=lambda v: f"{v:.4f}")]
    if not baselines.empty:
        keys = ["method", *[a for a in varying_axes(baselines) if a in ("task", "alpha", "lr", "size")]]
        med = baselines.groupby(keys)["value"].median()
        lines += ["", "baselines:", med.to_string(float_format=lambda v: f"{v:.4f}")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The paper's table shapes


def _median_spread(values: pd.Series, digits: int = 4) -> str:
    """"median ± half-range" over seeds (a single seed: the value alone)."""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.median():.{digits}f} ± {(values.max() - values.min()) / 2:.{digits}f}"


def _digits(results: pd.DataFrame) -> int:
    """Decimals of a metric: 1 on the 0–100 scale (the paper's 91.3, BLEU 70.4), else 4 (0.9130)."""
    return 1 if "metric" in results and results["metric"].map(in_points).any() else 4


def target_order(targets: str) -> tuple:
    """The paper's row order: fewer matrix kinds first, then q, k, v, o ("q" < "v" < "q,v" < "q,k,v,o")."""
    kinds = targets.split(",") if targets else []
    return (99 if targets == ALL_LINEAR else len(kinds)), tuple(kind_order(k) for k in kinds), targets


def _in_target_order(table: pd.DataFrame, level: str = "targets") -> pd.DataFrame:
    keys = table.index.get_level_values(level) if level in (table.index.names or []) else table[level]
    order = sorted(range(len(table)), key=lambda n: target_order(keys[n]))
    return table.iloc[order]


def rank_target_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table 6: main metric, median ± half-range over seeds; rows = target set (the paper's
    order: q, q,v, q,k,v,o), columns = r."""
    lora = results[results["method"] == "lora"]
    digits = _digits(results)
    table = lora.groupby(["targets", "r"])["value"].apply(_median_spread, digits=digits).unstack("r")
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
    spread = chosen.groupby(["targets", "r"])["value"].apply(_median_spread, digits=_digits(results))
    table = _in_target_order(spread.reset_index())
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
    targets = targets or pick_targets(lora)
    metrics = [c for c in lora.columns if c.startswith("dev_")]
    table = lora[lora["targets"] == targets].groupby("r")[metrics].median()
    return table.rename(columns=lambda c: c.removeprefix("dev_")).rename_axis(f"r ({targets})")


def nlg_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table 3 (E2E NLG): BLEU, NIST, METEOR, ROUGE-L and CIDEr of each method, target set and r (rows),
    median ± half-range over seeds, BLEU, METEOR and ROUGE-L with one decimal, NIST and CIDEr with two
    (the paper's digits); only the metrics the sweep computed (``maths.nlg_metrics``)."""
    metrics = [m for m in E2E_METRICS if f"dev_{m}" in results and results[f"dev_{m}"].notna().any()]
    if not metrics:
        return pd.DataFrame()
    rows = results.assign(row=[_method_name(m, t, r, s) for m, t, r, s in
                               zip(results["method"], results["targets"], results["r"],
                                   results["size"] if "size" in results else [0] * len(results))])
    table = pd.DataFrame({NAMES[m]: rows.groupby("row", sort=False)[f"dev_{m}"].apply(
        _median_spread, digits=1 if m in POINTS else 2) for m in metrics})
    return table.rename_axis("method")


# Table 2's row names and order: the paper's (FT, BitFit, adapters, LoRA), head only and prefix tuning beside.
METHOD_NAMES = {"full": "Full fine-tuning", "bitfit": "BitFit", "head": "Head only", "houlsby": "Adapter^H m={n}",
                "pfeiffer": "Adapter^P m={n}", "prefix": "Prefix l_p={n}", "lora": "LoRA {t} r={r}"}
METHOD_ORDER = {m: n for n, m in enumerate(METHOD_NAMES)}


def _method_name(method: str, targets: str, r: int, size: int) -> str:
    return METHOD_NAMES.get(method, method).format(t=targets, r=r, n=size)


def method_table(results: pd.DataFrame, lora: list[tuple[str, int]] | None = None) -> pd.DataFrame:
    """Table 2: rows = method (full fine-tuning, BitFit, head only, Houlsby and Pfeiffer adapters and
    prefix tuning at each size, then LoRA: every target set and r, or only the (targets, r) pairs
    in `lora`, e.g. [("q,v", 8)] as the paper), trainable parameters (with the classifier head;
    without it too when the results have the column, the paper's count; for the adapter baselines
    also by the paper's formula, which equals the count), then the main metric per task (median ±
    half-range over seeds). `results` may hold several sweeps, one task each. When the best
    evaluations were chosen on a held-out split (`selected_on`), each task's last evaluation is
    given beside its best-on-held-out one ("<task>, last evaluation")."""
    if lora is not None:
        keep = results["method"] != "lora"
        for targets, r in lora:
            keep |= (results["method"] == "lora") & (results["targets"] == targets) & (results["r"] == r)
        results = results[keep]
    sizes = results["size"] if "size" in results else pd.Series(0, index=results.index)
    rows = results.assign(method_name=[_method_name(m, t, r, n) for m, t, r, n in
                                       zip(results["method"], results["targets"], results["r"], sizes, strict=True)],
                          size=sizes)
    rows = rows.assign(order=rows["method"].map(METHOD_ORDER), target_order=rows["targets"].map(target_order))
    rows = rows.sort_values(["order", "size", "target_order", "r"], kind="stable")
    columns = {"trainable_total": "trainable parameters"}
    if "trainable_adapter" in rows:
        columns["trainable_adapter"] = "trainable excl. head"
    if "trainable_by_formula" in rows and rows["trainable_by_formula"].notna().any():
        columns.update(trainable_by_formula="by the formula (excl. head)", trainable_formula="formula (Hu et al. §5.1)")
    params = rows.groupby("method_name", sort=False)[list(columns)].first().rename(columns=columns)
    values = rows.groupby(["method_name", "task"], sort=False)["value"].apply(
        _median_spread, digits=_digits(results)).unstack("task")
    tasks = list(dict.fromkeys(rows["task"]))
    table = pd.concat([params, values[tasks]], axis=1)
    if "selected_on" in rows and (rows["selected_on"] == "validation").any():
        # chosen on held-out data: the last evaluation beside it, neither chosen on the reported set
        finals = rows.groupby(["method_name", "task"], sort=False)["final_value"].apply(
            _median_spread, digits=_digits(results)).unstack("task")
        table = pd.concat([table, finals[tasks].rename(columns=lambda t: f"{t}, last evaluation")], axis=1)
    return table.rename_axis("method")


def storage_table(shapes: pd.DataFrame, ranks) -> pd.DataFrame:
    """Parameters per adapted matrix: dense ΔW d·k against LoRA's r·(d + k) and the reduction
    1 − r(d + k)/(dk) (Hu et al. 2021, §4.1); `shapes` has columns module, d, k.
    E.g. d = k = 512, r = 8: 262,144 against 8,192, a 96.9% reduction."""
    rows = []
    kinds = shapes[["module", "d", "k"]].drop_duplicates().sort_values("module", key=lambda m: m.map(kind_order))
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
    from lowrank_lab.present.select import middle_layer  # the figures' layer rule

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


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (index as the first column), numbers through ``number``; no
    tabulate dependency."""
    frame = table.reset_index() if table.index.name or not isinstance(table.index, pd.RangeIndex) else table
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(number(_plain(v)) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _plain(v):
    """numpy scalars as Python numbers, so that ``number`` formats them."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


def _csv(table: pd.DataFrame) -> str:
    """CSV text, the index as the first column (pandas' own CSV writer is the store's)."""
    frame = table.reset_index() if table.index.name or not isinstance(table.index, pd.RangeIndex) else table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([str(c) for c in frame.columns])
    writer.writerows([_plain(v) for v in row] for row in frame.itertuples(index=False))
    return buffer.getvalue()


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "md":
        return to_markdown(table)
    if fmt == "tex":
        return table.to_latex(float_format=number)
    if fmt == "csv":
        return _csv(table)
    raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")


def latency_table(latency: pd.DataFrame, stat: str = "median_ms") -> pd.DataFrame:
    """Table 1's shape: rows = model × variant (base, merged and unmerged LoRA, adapters, prefix),
    one column per batch × sequence length, each cell the median forward latency (`stat`: or
    "min_ms", the fastest run, less sensitive to other load on a shared machine) and its overhead
    against the base model's, "12.3 ms (+4.5%)"; a row "timed runs" per model gives the rounds
    each is over; `latency` is benchmarks/bench_latency.py's latency.csv."""
    rows = {}
    order = list(dict.fromkeys(latency["variant"]))
    for (model, batch, seq), group in latency.groupby(["model", "batch", "seq"], sort=False):
        base = group.loc[group["variant"] == "base", stat].iloc[0]
        column = f"b={batch}, n={seq}"
        for variant, ms in zip(group["variant"], group[stat], strict=True):
            cell = f"{ms:.1f} ms" if variant == "base" else f"{ms:.1f} ms ({100 * (ms / base - 1):+.1f}%)"
            rows.setdefault((model, variant), {})[column] = cell
        rows.setdefault((model, "timed runs"), {})[column] = str(int(group["repeats"].iloc[0]))
    table = pd.DataFrame.from_dict(rows, orient="index")
    params = latency.groupby(["model", "variant"], sort=False)["adapter_parameters"].first()
    table.insert(0, "adapter parameters", [number(int(params[k])) if k in params.index else "" for k in table.index])
    rank = {v: n for n, v in enumerate(order + ["timed runs"])}
    keys = sorted(table.index, key=lambda k: (list(dict.fromkeys(latency["model"])).index(k[0]), rank[k[1]]))
    return table.loc[keys].rename_axis(["model", "variant"])
