"""Tables of results (presentation): tidy tables in, text/Markdown/LaTeX/CSV out; no torch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .analysis import results_table


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
