"""The text of a sweep's report (``lowrank-lab report SWEEP``), in Markdown: a summary first (what
was trained, the best cell, the headline numbers beside the paper's), then every figure and table
of the registry under its paper name with its caption, the paper's numbers in the same units, and
a note saying how to get what is missing. ``markup.to_html`` turns it into the HTML page;
``workflow.report`` reads the tables and writes the files. No torch, no file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from lowrank_lab.present import tables
from lowrank_lab.present.entry import SIDE_TEXT, Entry, View
from lowrank_lab.present.select import MissingData, middle_layer, pick_targets, select
from lowrank_lab.store.tables import AMPLIFICATION, PHI, RESULTS

PAPER = "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models (arXiv:2106.09685)"
PAPER_AMPLIFICATION = {4: 21.5, 64: 1.88}  # Table 7: GPT-3 L48 ΔWq, 6.91/0.32 and 3.57/1.90


@dataclass(frozen=True)
class Shown:
    """One registry entry as drawn for the report: a figure (its image file), a table, or skipped."""

    entry: Entry
    image: str | None = None  # the PNG's file name, beside the report
    table: pd.DataFrame | None = None
    skipped: str | None = None  # why not, in one sentence


BASELINES = {"full": "Full fine-tuning", "bitfit": "BitFit", "head": "Head only"}


def _axis(values: Sequence) -> str:
    """1, 2, 4 and 8 (no list syntax in the report)."""
    values = [str(v) for v in values]
    return " and ".join([", ".join(values[:-1]), values[-1]]) if len(values) > 1 else "".join(values)


def trained(spec: Mapping, results: pd.DataFrame) -> str:
    """One sentence: model, task, the LoRA grid, the baselines, how many cells finished."""
    sweep, model = spec.get("sweep", {}), spec.get("model", {})
    lora = results[results["method"] == "lora"] if not results.empty else results
    grid = [f"target sets {_axis([f'({t})' for t in sweep.get('targets', [])])}", f"r = {_axis(sweep.get('r', []))}",
            f"seeds {_axis(sweep.get('seeds', []))}"]
    for key, name in (("scaling_rules", "scaling"), ("inits", "init")):
        if sweep.get(key):
            grid.append(f"{name} {_axis(sweep[key])}")
    if sweep.get("budget_rank"):
        grid.append(f"budget r × matrices = {sweep['budget_rank']}")
    baselines = _axis([BASELINES.get(b, b) for b in sweep.get("baselines", [])]) or "none"
    return (f"Model `{model.get('name', '?')}` on task `{spec.get('data', {}).get('task', '?')}`: LoRA over "
            f"{'; '.join(grid)}; baselines: {baselines}. {len(results)} cells finished "
            f"({len(lora)} LoRA).")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def best_cells(results: pd.DataFrame) -> list[str]:
    """The best LoRA configuration and each baseline, median over seeds, in the paper's unit."""
    if results.empty:
        return ["No finished cell."]
    metric = results["metric"].iloc[0]
    keys = [k for k in ("method", "targets", "r", "scaling_rule", "init") if k in results]
    med = results.groupby(keys, dropna=False)["value"].agg(["median", "size"]).reset_index()
    lines = []
    lora = med[med["method"] == "lora"]
    if not lora.empty:
        top = lora.loc[lora["median"].idxmax()]
        lines.append(f"Best LoRA: targets {top['targets']}, r = {top['r']} — {metric} "
                     f"{_pct(top['median'])} (median of {top['size']} seeds).")
    for _, row in med[med["method"] != "lora"].iterrows():
        lines.append(f"{BASELINES.get(row['method'], row['method'])}: {metric} {_pct(row['median'])} (median of {row['size']} seeds).")
    best = results.loc[results["value"].idxmax()]
    lines.append(f"Best single cell: `{best['cell']}`, {metric} {_pct(best['value'])}.")
    return lines


def headline(frames: Mapping[str, pd.DataFrame]) -> list[str]:
    """The paper's two headline analyses in our sweep: φ at i = j = 1 between two ranks (Fig. 3)
    and the amplification factor at the smallest and largest r (Table 7), each beside the paper's."""
    lines = []
    try:
        amp = frames[AMPLIFICATION]
        t = amp[amp["method"] == "lora"]
        t = select(t, targets=pick_targets(t), module="q")
        t = select(t, layer=middle_layer(t["layer"].dropna()))
        med = t.groupby("r")["amplification"].median()
        ours = "; ".join(f"r = {r}: {tables.number(med[r])}" for r in (med.index.min(), med.index.max()))
        lines.append(f"Amplification ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F (ΔWq, layer L{int(t['layer'].iloc[0])} (0-based), median over "
                     f"seeds, α/r included): {ours}. Paper (GPT-3 ΔWq, layer 48): r = 4: 21.5; r = 64: 1.88.")
    except (KeyError, MissingData, ValueError):
        pass
    try:
        phi = select(frames[PHI], comparison="ranks", side=frames[PHI]["side"].iloc[0])
        phi = select(phi, targets=pick_targets(phi), module="q", i=1, j=1)
        phi = select(phi, layer=middle_layer(phi["layer"].dropna()), r2=int(phi["r2"].max()))
        phi = phi[phi["r1"] == phi["r1"].max()]
        lines.append(f"φ(A_r={int(phi['r1'].iloc[0])}, A_r={int(phi['r2'].iloc[0])}, i = 1, j = 1) for ΔWq at "
                     f"layer L{int(phi['layer'].iloc[0])}: {tables.number(float(phi['phi'].median()))} (median over "
                     "seeds); paper (r = 8 vs 64): above 0.5, the top direction is shared.")
    except (KeyError, IndexError, MissingData, ValueError):
        pass
    return lines


def summary(spec: Mapping, frames: Mapping[str, pd.DataFrame], shown: Sequence[Shown], view: View,
            sides: Sequence[str]) -> list[str]:
    """The report's first section, as Markdown lines."""
    results = frames.get(RESULTS, pd.DataFrame())
    drawn = [s for s in shown if not s.skipped]
    skipped = [s.entry.paper for s in shown if s.skipped]
    lines = ["## Summary", "", f"**Trained.** {trained(spec, results)}", ""]
    model = (spec.get("provenance") or {}).get("model") or {}
    if model.get("w0"):  # the embedded decoder: its W0 is not the published model's
        lines += [f"**W0.** {model['w0']}. Every analysis against W0 (Table 7, the amplification factor, Fig. 8, "
                  "intruders) describes this W0, quantisation noise included.", ""]
    if str(model.get("weights", "")).startswith("random"):  # model.random_init, or a config-only folder
        lines += [f"**Base.** Its weights are {model['weights']}: a speed and memory study; the metrics and every "
                  "analysis against W0 describe an untrained model, not the published one.", ""]
    lines += ["**Results** (the main metric ×100, the paper's unit):", ""]
    lines += [f"- {line}" for line in best_cells(results)] + [""]
    numbers = headline(frames)
    if numbers:
        lines += ["**Headline numbers, ours and the paper's:**", ""] + [f"- {line}" for line in numbers] + [""]
    lines += [f"**φ figures** show {SIDE_TEXT.get(view.side, view.side)}; sides computed for this sweep: "
              f"{', '.join(sides) or 'none'} (`lowrank-lab report SWEEP --side B` shows another).", "",
              f"**Shown:** {len(drawn)} of {len(shown)} figures and tables"
              + (f"; skipped (see each section for how to get it): {'; '.join(skipped)}." if skipped else "."), ""]
    return lines


def section(s: Shown, view: View) -> list[str]:
    """One figure or table under its paper name: the image or our table, the caption, the paper's."""
    e = s.entry
    lines = [f"### {e.paper}: {e.title}", ""]
    if s.skipped:
        lines += [f"*Skipped: {s.skipped.rstrip('.')}.* To get it: {e.skip_note}.", ""]
    elif s.image:
        lines += [f"![{e.paper}: {e.title}]({s.image})", ""]
    else:
        lines += [tables.to_markdown(s.table)]
    lines += [f"{e.caption_for(view)}", ""]
    if e.paper_note:
        lines += [f"> {e.paper_note}", ""]
    if e.paper_table is not None:
        lines += ["The paper's numbers (GPT-3 175B unless stated):", "", tables.to_markdown(e.paper_table)]
    return lines


def conventions(conventions: Mapping) -> list[str]:
    """The definitions every table's sidecar states, as a Markdown list."""
    lines = ["## Conventions", ""]
    for key, value in conventions.items():
        if isinstance(value, Mapping):
            lines += [f"- **{key} {k}**: {v}" for k, v in value.items()]
        else:
            lines.append(f"- **{key}**: {value}")
    lines += ["- **numbers**: metrics ×100 with one decimal (median ± half the range over seeds); every "
              "other number with 4 significant digits, integers from 10,000 with thousands separators", ""]
    return lines


def markdown(name: str, spec: Mapping, frames: Mapping[str, pd.DataFrame], shown: Sequence[Shown],
             view: View, sides: Sequence[str], convention: Mapping, provenance: str) -> str:
    """The whole report."""
    lines = [f"# lowrank-lab report: {name}", "", f"Paper: {PAPER}.", ""]
    lines += summary(spec, frames, shown, view, sides)
    lines += ["## Figures", ""]
    for s in shown:
        if s.entry.kind == "figure":
            lines += section(s, view)
    lines += ["## Tables", ""]
    for s in shown:
        if s.entry.kind == "table":
            lines += section(s, view)
    lines += conventions(convention)
    lines += ["## Provenance", "", provenance, ""]
    return "\n".join(lines)
