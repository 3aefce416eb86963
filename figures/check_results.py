"""Recompute every number figures/RESULTS.md quotes for the five-task GLUE study from the committed
files (figures/results/glue-*/data/*.parquet, written by figures/export_results.py), and check that
RESULTS.md holds them as computed here.

    python figures/check_results.py            # print the tables of numbers
    python figures/check_results.py --check    # exit 1 unless RESULTS.md's block equals them
    python figures/check_results.py --write    # put them into RESULTS.md's block

The block sits between the two marker lines below in figures/RESULTS.md; the text around it quotes
only numbers from it. Each column says its population: "median over 3 seeds" is the median of the
three cells that differ only in train.seed; "L2" is the middle layer (0-based) of MiniLM's six.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent
TASKS = {"SST-2": "glue-sst2", "RTE": "glue-rte", "MRPC": "glue-mrpc", "CoLA": "glue-cola", "STS-B": "glue-stsb"}
MIDDLE = 2  # layers[(6 - 1) // 2]


def data(task: str, table: str) -> pd.DataFrame:
    return pd.read_parquet(ROOT / "results" / TASKS[task] / "data" / f"{table}.parquet")


def seed_median(values: pd.Series) -> str:
    """'median ± half-range' ×100 over seeds, as Table 2 prints it."""
    v = values * 100
    return f"{v.median():.1f} ± {(v.max() - v.min()) / 2:.1f}"


METHODS = {"Full fine-tuning": "full", "BitFit": "bitfit", "Head only": "head", "LoRA q,v r=8": "lora"}
COLUMNS = [("SST-2", "value", "accuracy"), ("RTE", "value", "accuracy"), ("MRPC", "value", "accuracy"),
           ("MRPC", "dev_f1", "F1"), ("CoLA", "value", "Matthews corr."), ("STS-B", "value", "Pearson"),
           ("STS-B", "dev_spearman", "Spearman")]


def table2() -> str:
    """Rows: methods; columns: each task's metrics (the paper's Table 2 shape); the metrics of
    each cell's best evaluation (by the task's main metric)."""
    lines = ["| method | " + " | ".join(f"{t} {m}" for t, _, m in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, method in METHODS.items():
        cells = []
        for task, column, _ in COLUMNS:
            res = data(task, "results")
            mask = res.method == method
            if method == "lora":
                mask &= (res.targets == "q,v") & (res.r == 8)
            cells.append(seed_median(res.loc[mask, column]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_lora(task: str) -> list[tuple[str, str]]:
    res = data(task, "results")
    lora = res[res.method == "lora"].groupby(["targets", "r"]).value.median() * 100
    targets, r = lora.idxmax()
    spread = lora.groupby(level="targets").agg(lambda v: v.max() - v.min())
    return [("best LoRA group", f"{targets}, r = {r}"), ("its metric", f"{lora.max():.1f}"),
            ("q,v: max − min over r", f"{spread['q,v']:.1f}")]


def phi_claims(task: str) -> list[tuple[str, str]]:
    phi = data(task, "phi")
    mid = phi[(phi.layer == MIDDLE) & (phi.i == 1) & (phi.j == 1)]
    grid = phi[(phi.comparison == "seeds") & (phi.r1 == 64) & (phi.layer == MIDDLE)]
    out = []
    for m in ("q", "v"):
        ranks = mid[(mid.comparison == "ranks") & (mid.module == m) & (mid.r1 == 8) & (mid.r2 == 64)]
        out.append((f"ranks ΔW{m}", f"{ranks.phi.median():.3f}"))
    for m in ("q", "v"):
        seeds = mid[(mid.comparison == "seeds") & (mid.module == m) & (mid.r1 == 64)]
        out.append((f"seeds ΔW{m}", f"{seeds.phi.median():.3f}"))
    for m in ("q", "v"):
        out.append((f"seeds ΔW{m}, mean i, j ≤ 16", f"{grid[grid.module == m].phi.mean():.3f}"))
    rand = phi[(phi.comparison == "random") & (phi.r1 == 64) & (phi.i <= 16) & (phi.j <= 16)]
    out.append(("random pair, mean i, j ≤ 16", f"{rand.phi.mean():.3f}"))
    return out


def table7(task: str) -> list[tuple[str, str]]:
    amp = data(task, "amplification")
    qv = amp[(amp.targets == "q,v") & (amp.module == "q")]
    mid = qv[qv.layer == MIDDLE]
    out = []
    for r in (4, 64):
        at = mid[mid.r == r]
        out.append((f"r = {r}: ΔW / random", f"{(at.proj_delta_w / at.proj_random).median():.2f}"))
        out.append((f"r = {r}: amplification L2", f"{at.amplification.median():.2f}"))
        out.append((f"r = {r}: amplification, all layers", f"{qv[qv.r == r].amplification.median():.2f}"))
    return out


def spectra(task: str) -> list[tuple[str, str]]:
    t = data(task, "spectrum_metrics")
    t = t[t.module.isin(["q", "v"])]
    lora = t[(t.method == "lora") & (t.targets == "q,v")]
    full = t[t.method == "full"]
    return [("LoRA q,v r = 8", f"{lora[lora.r == 8].rank_90.median():.0f}"),
            ("LoRA q,v r = 64", f"{lora[lora.r == 64].rank_90.median():.0f}"),
            ("full fine-tuning", f"{full.rank_90.median():.0f}"),
            ("full fine-tuning, stable rank", f"{full.stable_rank.median():.1f}")]


def intruders(task: str) -> list[tuple[str, str]]:
    t = data(task, "intruders")
    t = t[(t.epsilon == 0.5) & (t.module.isin(["q", "v"])) & ((t.targets == "q,v") | (t.method == "full"))]
    per_cell = t.groupby(["method", "r", "seed"]).n_intruders.sum()
    return [("LoRA q,v r = 8", f"{per_cell.loc['lora', 8].mean():.1f}"),
            ("LoRA q,v r = 64", f"{per_cell.loc['lora', 64].mean():.1f}"),
            ("full fine-tuning", f"{per_cell.loc['full'].mean():.1f}")]


def decoder() -> str:
    """SmolLM2-135M on VADER (results/vader-smollm2-small): accuracy ×100 and the final training
    (completion) loss, median over 2 seeds, per target set × r."""
    res = pd.read_parquet(ROOT / "results" / "vader-smollm2-small" / "data" / "results.parquet")
    med = res.groupby(["targets", "r"])[["value", "final_train_loss"]].median()
    lines = ["| targets | " + " | ".join(f"r = {r}" for r in sorted(res.r.unique())) + " |",
             "|---" * (res.r.nunique() + 1) + "|"]
    for targets in ("q,v", "all-linear"):
        cells = [f"{100 * med.loc[(targets, r), 'value']:.1f} / {med.loc[(targets, r), 'final_train_loss']:.2f}"
                 for r in sorted(res.r.unique())]
        lines.append(f"| {targets} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEGIN, END = "<!-- check_results.py: begin -->", "<!-- check_results.py: end -->"


def markdown(title: str, rows: dict[str, list[tuple[str, str]]]) -> str:
    """One table: a row per task, a column per quantity (the claims' descriptions minus the task)."""
    header = [what for what, _ in next(iter(rows.values()))]
    lines = [f"**{title}**", "", "| task | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    lines += [f"| {task} | " + " | ".join(v for _, v in claims) + " |" for task, claims in rows.items()]
    return "\n".join(lines)


def block() -> str:
    tables = [("LoRA's best cell group (targets, r) by the median over 3 seeds of the main metric ×100, and "
               "how far apart the q,v medians of r = 1…64 lie (points)", best_lora),
              ("φ (Figs. 3, 4), target set q,v, L2, side A (right singular vectors of A). \"ranks\": "
               "φ(A_8, A_64, i = 1, j = 1), median over 3 seeds; \"seeds\": φ(A_64, A'_64, 1, 1), median "
               "over the 3 seed pairs, and the mean of φ over i, j ≤ 16 over the 3 pairs; a Haar-random pair "
               "of r = 64 beside it", phi_claims),
              ("Table 7 and the amplification factor, ΔWq of target set q,v (α/r included). \"ΔW / random\": "
               "‖UᵀW0Vᵀ‖_F with U, V the top-r singular vectors of ΔW over the same with random U, V, median "
               "over 3 seeds at L2; amplification ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F, median over 3 seeds at L2 and over "
               "6 layers × 3 seeds", table7),
              ("Spectra of ΔW (α/r included): rank_90, the smallest k whose top-k singular values hold 90% "
               "of Σσ², of the q and v matrices, median over 6 layers × 2 matrices × 3 seeds; full "
               "fine-tuning's stable rank ‖ΔW‖_F²/σ_max² beside it", spectra),
              ("Intruder dimensions: among the top 10 singular vectors of W0 + ΔW, those with |cos| < 0.5 "
               "against every singular vector of W0, summed over the 12 q and v matrices of a cell, mean over "
               "3 seeds (full fine-tuning: its q and v matrices)", intruders)]
    parts = ["**Table 2's shape** (dev metric ×100 at each cell's best evaluation, median ± half the range "
             "over 3 seeds)\n\n" + table2()]
    parts += [markdown(title, {task: fn(task) for task in TASKS}) for title, fn in tables]
    parts.append("**SmolLM2-135M on VADER** (H200, `results/vader-smollm2-small`): dev accuracy ×100 / final "
                 "training loss (completion tokens), median over 2 seeds\n\n" + decoder())
    return "\n\n".join([BEGIN, *parts, END])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 unless RESULTS.md's block equals the numbers")
    ap.add_argument("--write", action="store_true", help="write the numbers into RESULTS.md's block")
    args = ap.parse_args()
    path = ROOT / "RESULTS.md"
    text, new = path.read_text(), block()
    if not (args.check or args.write):
        print(new)
        return
    if BEGIN not in text or END not in text:
        sys.exit(f"{path}: no block between {BEGIN} and {END}")
    old = text[text.index(BEGIN):text.index(END) + len(END)]
    if args.write:
        path.write_text(text.replace(old, new))
    elif args.check and old != new:
        sys.exit(f"{path}: the numbers between the markers differ from the committed data; "
                 "rerun python figures/check_results.py --write and reread the text around them")


if __name__ == "__main__":
    main()
