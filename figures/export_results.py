"""A sweep's results, compactly, for the repository: the tables behind every committed figure and
every number figures/RESULTS.md quotes (figures/check_results.py recomputes them from these files).

    python figures/export_results.py SWEEP --out figures/results/NAME

Writes OUT/data/<table>.parquet (zstd) for results (one row per cell), learning_curves and every
analysis table of SWEEP/analysis/, each beside OUT/data/<table>.json: the table's own sidecar (the
sweep's resolved spec, its finished cells, the conventions, provenance) with "kept" saying which
rows were kept. The large tables are cut to the rows the committed figures and quoted numbers
draw on, so that a task's data stays under a megabyte:
- phi: target set q,v (the paper's; else the sweep's first); "ranks": r1 = 8 (else the largest
  below it) against the largest r (Figs. 3, 6); "seeds": every i, j at r = r1, i, j ≤ 16 at the
  largest r (Figs. 4, 7); every "random" row;
- phi_w0: that target set, seed 0, adapter rank 4 and 8, and j ≤ 16 at the largest r (Fig. 8);
- spectrum: LoRA of that target set, and full fine-tuning's seed 0 at its q and v matrices and every
  matrix of the middle layer (the figure's; spectrum_metrics keeps every matrix); eckart_young: seed 0;
the φ columns are stored as float32 (7 significant digits; RESULTS.md quotes at most 4), every
other table whole; φ tables keep the q and v matrices only (the figures' ΔWq and ΔWv). Paths are
machine-specific: the sweep's is replaced by its folder name, an absolute sweep.out_dir by
"RUNS_DIR", and any other absolute path (a cache folder) by ".../" and its last component.
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from lowrank_lab.store import exported

TABLES = ("results", "learning_curves", "phi", "phi_w0", "amplification", "spectrum", "spectrum_metrics",
          "intruders", "eckart_young")


def keep_rows(name: str, table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    sets = [t for t in table.get("targets", pd.Series(dtype=str)).dropna().unique() if t]
    targets = "q,v" if "q,v" in sets else (sets[0] if sets else "")
    mine = table.targets == targets if "targets" in table else None
    if name in ("phi", "phi_w0"):
        mine = mine & table.module.isin(["q", "v"])
    if name == "phi":
        ranks_seen = sorted(set(table.loc[table.comparison == "ranks", "r2"]) | set(table.loc[table.comparison == "ranks", "r1"]))
        top = int(max(ranks_seen))
        r1 = 8 if 8 in ranks_seen and top > 8 else int(max(r for r in ranks_seen if r < top))
        ranks = (table.comparison == "ranks") & mine & (table.r2 == top) & (table.r1 == r1)
        seeds = (table.comparison == "seeds") & mine & ((table.r1 == r1) | ((table.r1 == top) & (table.i <= 16)
                                                                            & (table.j <= 16)))
        return _float32(table[ranks | seeds | (table.comparison == "random")]), \
            f"targets {targets}, q and v matrices; ranks: r1 = {r1} against r2 = {top}; seeds: r = {r1}, and i, j <= 16 at r = {top}; every random row"
    if name == "phi_w0":
        top = int(table.r2.max())
        kept = mine & (table.seed == 0) & (table.r2.isin([4, 8]) | ((table.r2 == top) & (table.j <= 16)))
        return _float32(table[kept]), f"targets {targets}, q and v matrices, seed 0: adapter rank 4, 8, and j <= 16 at {top}"
    if name == "spectrum":
        layers = sorted(table.layer.dropna().unique())
        middle = layers[(len(layers) - 1) // 2] if layers else None
        full = (table.method == "full") & (table.seed == 0) & (table.module.isin(["q", "v"]) | (table.layer == middle))
        return table[(mine & (table.method == "lora")) | full], \
            f"LoRA {targets}; full fine-tuning seed 0, its q and v matrices and every matrix of layer {middle}"
    if name == "eckart_young":
        return table[table.seed == 0], "seed 0"
    return table, "every row"


def portable(value):
    """`value` with every absolute path string replaced by ".../" and its last component."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and " " not in value:
        return f".../{Path(value).name}"
    return value


def _float32(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype({"phi": "float32", "phi_random": "float32"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    analysis = args.sweep / "analysis"
    for name in TABLES:
        if not (analysis / f"{name}.json").exists() or not json.loads((analysis / f"{name}.json").read_text())["rows"]:
            print(f"{name}: not computed or empty, skipped")
            continue
        whole = exported.read_analysis(analysis, name)
        table, kept = keep_rows(name, whole)
        meta = json.loads((analysis / f"{name}.json").read_text())
        meta.update(sweep=args.sweep.name, kept=kept, layers=exported.layers_of(whole))
        if Path(meta["sweep_spec"]["sweep"]["out_dir"]).is_absolute():
            meta["sweep_spec"]["sweep"]["out_dir"] = "RUNS_DIR"
        path = exported.write(args.out, name, table, portable(meta))
        print(f"{name}: {len(table)} rows ({kept}), {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
