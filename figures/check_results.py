"""Recompute every number that figures/RESULTS.md, benchmarks/RESULTS.md and README.md quote from
the committed files, and check that the documents hold them as computed here.

    python figures/check_results.py            # print the block of tables
    python figures/check_results.py --check    # exit 1 unless every quoted number equals the data
    python figures/check_results.py --write    # render the block and every quoted number from the data

Two kinds of number are checked. The block between the two marker lines below in
figures/RESULTS.md: tables recomputed from the five GLUE sweeps and the SmolLM2 sweeps
(figures/results/*/data/*.parquet, read through lowrank_lab.store.exported). And every number of
the three documents' prose, each written as a reference (figures/quoted.py) to the function that
computes it from a committed table, sidecar, spec, timing file, the paper's numbers
(figures/paper.toml) or a table a benchmark printed into benchmarks/RESULTS.md (figures/references.py
and the functions below). A number typed by hand in figures/RESULTS.md's prose (outside code, and
other than a name: a table, a figure, a year, an arXiv id, a grid point such as "r = 8") fails
the check too. Last, every committed results folder must say where it ran (device, driver, CUDA)
and come from a clean tree, except those listed in MADE_BEFORE_THE_CHECK.

Each column says its population: "median over 3 seeds" is the median of the cells that differ
only in train.seed; "L2" is the middle layer (0-based) of MiniLM's six, from the export's sidecar.
"""

import argparse
import sys
from functools import cache
from pathlib import Path

import pandas as pd

from lowrank_lab.store import exported

ROOT = Path(__file__).resolve().parent
REPO_ROOT = ROOT.parent
sys.path.insert(0, str(ROOT))  # references.py and quoted.py beside this script
from references import f, num, part, span  # noqa: E402
TASKS = {"SST-2": "glue-sst2", "RTE": "glue-rte", "MRPC": "glue-mrpc", "CoLA": "glue-cola", "STS-B": "glue-stsb"}


@cache  # read once per run; every caller filters into new frames
def data(task: str, table: str) -> pd.DataFrame:
    return exported.read(ROOT / "results" / TASKS[task], table)


def middle(task: str) -> int:
    """The middle layer of the task's model, from its exported amplification table's sidecar."""
    return exported.middle_layer(ROOT / "results" / TASKS[task], "amplification")


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
    mid = phi[(phi.layer == middle(task)) & (phi.i == 1) & (phi.j == 1)]
    grid = phi[(phi.comparison == "seeds") & (phi.r1 == 64) & (phi.layer == middle(task))]
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
    mid = qv[qv.layer == middle(task)]
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


DECODER = {"VADER": "vader-smollm2", "E2E": "e2e-smollm2"}  # SmolLM2-135M on the H200, 42 LoRA cells each
TARGETS = ("q,v", "all-linear")


@cache
def decoder_data(task: str, table: str) -> pd.DataFrame:
    return exported.read(ROOT / "results" / DECODER[task], table)


def accuracy_and_loss(cells: pd.DataFrame) -> str:
    return f"{100 * cells.value.median():.1f} / {cells.final_train_loss.median():.3f}"


def bleu_and_rouge(cells: pd.DataFrame) -> str:
    return f"{cells.dev_bleu.median():.1f} / {cells.dev_rouge_l.median():.1f}"


def decoder_metrics() -> str:
    """Per target set × r, median over 3 seeds: VADER dev accuracy ×100 / final training loss
    (completion tokens); E2E test BLEU / ROUGE-L (0–100); full fine-tuning's VADER row beside."""
    vader, e2e = decoder_data("VADER", "results"), decoder_data("E2E", "results")
    ranks = sorted(vader.loc[vader.method == "lora", "r"].unique())
    lines = ["| task | targets | " + " | ".join(f"r = {r}" for r in ranks) + " |", "|---" * (len(ranks) + 2) + "|"]
    for task, res, fmt in (("VADER acc. / train loss", vader, accuracy_and_loss), ("E2E BLEU / ROUGE-L", e2e, bleu_and_rouge)):
        for targets in TARGETS:
            cells = [fmt(res[(res.method == "lora") & (res.targets == targets) & (res.r == r)]) for r in ranks]
            lines.append(f"| {task} | {targets} | " + " | ".join(cells) + " |")
    full = accuracy_and_loss(vader[vader.method == "full"])
    lines.append(f"| VADER acc. / train loss | full fine-tuning | {full} |" + " |" * (len(ranks) - 1))
    return "\n".join(lines)


MODULES = ("q", "v", "gate", "up", "down")


def decoder_geometry() -> str:
    """Table 7 and spectra of the all-linear adapters, a row per task × matrix kind, each number the
    median over 30 layers × 3 seeds."""
    lines = ["| task | matrix | amplification r = 4 | r = 64 | ΔW / random r = 4 | r = 64 | rank_90 of ΔW, r = 64 |",
             "|---" * 7 + "|"]
    for task in DECODER:
        amp = decoder_data(task, "amplification")
        amp = amp[amp.targets == "all-linear"].assign(ratio=lambda t: t.proj_delta_w / t.proj_random)
        metrics = decoder_data(task, "spectrum_metrics")
        lora = metrics[(metrics.method == "lora") & (metrics.targets == "all-linear")]
        for m in MODULES:
            at = amp[amp.module == m]
            values = [at[at.r == r].amplification.median() for r in (4, 64)] + [at[at.r == r].ratio.median() for r in (4, 64)]
            rank = lora[(lora.module == m) & (lora.r == 64)].rank_90.median()
            lines.append(f"| {task} | {m} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {rank:.0f} |")
    return "\n".join(lines)


def decoder_full(task: str) -> list[tuple[str, str]]:
    """Full fine-tuning's ΔW per matrix kind (VADER): rank_90 of min(d, k), stable rank."""
    t = decoder_data(task, "spectrum_metrics")
    t = t[t.method == "full"]
    return [(f"{m}: rank_90 of n / stable rank",
             f"{t[t.module == m].rank_90.median():.0f} of {t[t.module == m].n_sigma.median():.0f} / "
             f"{t[t.module == m].stable_rank.median():.1f}") for m in MODULES]


def decoder_intruders(task: str) -> list[tuple[str, str]]:
    """Intruders (ε = 0.5, top 10) summed over a cell's matrices, mean over 3 seeds."""
    t = decoder_data(task, "intruders")
    t = t[t.epsilon == 0.5]
    per_cell = t.groupby(["method", "targets", "r", "seed"]).n_intruders.sum()
    out = [(f"{targets} r = {r}", f"{per_cell.loc['lora', targets, r].mean():.1f}")
           for targets in TARGETS for r in (1, 8, 64)]
    if "full" in per_cell.index.get_level_values("method"):
        out.append(("full fine-tuning", f"{per_cell.loc['full'].mean():.1f}"))
    else:
        out.append(("full fine-tuning", "–"))
    return out


def decoder_phi(task: str) -> list[tuple[str, str]]:
    """φ of the q,v rerun (Figs. 3, 4, 7), side A, over its 30 layers: "ranks" φ(A_8, A_64, 1, 1) over
    30 layers × 3 seeds; "seeds" φ(A_64, A'_64, 1, 1) over 30 layers × 3 pairs, and by depth."""
    phi = decoder_data(task, "phi")
    top = phi[(phi.i == 1) & (phi.j == 1)]
    ranks = top[(top.comparison == "ranks") & (top.r1 == 8) & (top.r2 == 64)]
    seeds = top[(top.comparison == "seeds") & (top.r1 == 64)]
    grid = phi[(phi.comparison == "seeds") & (phi.r1 == 64) & (phi.i <= 16) & (phi.j <= 16)]
    rand = phi[(phi.comparison == "random") & (phi.r1 == 64) & (phi.i <= 16) & (phi.j <= 16)]
    layers = len(exported.read_sidecar(ROOT / "results" / DECODER[task], "phi")["layers"])
    third = layers // 3  # the first and the last third of the layers
    out = []
    for m in ("q", "v"):
        at = ranks[ranks.module == m].phi
        out.append((f"ranks ΔW{m} (share > 0.5)", f"{at.median():.3f} ({(at > 0.5).mean():.0%})"))
    for m in ("q", "v"):
        at = seeds[seeds.module == m]
        out.append((f"seeds ΔW{m}: all, L0–9, L20–29", f"{at.phi.median():.3f}, {at[at.layer < third].phi.median():.3f}, "
                                                      f"{at[at.layer >= layers - third].phi.median():.3f}"))
    out += [(f"seeds ΔW{m}, mean i, j ≤ 16", f"{grid[grid.module == m].phi.mean():.3f}") for m in ("q", "v")]
    return out + [("random pair, mean i, j ≤ 16", f"{rand.phi.mean():.3f}")]


def decoder_phi_w0(task: str) -> list[tuple[str, str]]:
    """Fig. 8: φ(Wq, A_r, i = top 10% of Wq's right singular vectors, j ≤ 4), median over 30 layers × 4 j, seed 0."""
    t = decoder_data(task, "phi_w0")
    t = t[(t.module == "q") & (t.i == t.i.max()) & (t.j <= 4)]
    out = [(f"A_r={r}", f"{t[(t.source == 'adapter') & (t.r2 == r)].phi.median():.3f}") for r in (4, 8, 64)]
    return out + [("random, r = 64", f"{t[(t.source == 'random') & (t.r2 == 64)].phi.median():.3f}")]


def decoder_rerun(task: str) -> list[tuple[str, str]]:
    """The φ rerun's q,v cells against the same cells of the first run (dev accuracy)."""
    first = decoder_data(task, "results")
    first = first[(first.method == "lora") & (first.targets == "q,v")]
    again = decoder_data(task, "phi_rerun_results").merge(first, on=["r", "seed"], suffixes=("", "_first"))
    return [("cells", f"{len(again)}"), ("median, rerun", f"{100 * again.dev_accuracy.median():.1f}"),
            ("median, first run", f"{100 * again.dev_accuracy_first.median():.1f}"),
            ("largest per-cell difference", f"{100 * (again.dev_accuracy - again.dev_accuracy_first).abs().max():.1f}")]


BEGIN, END = "<!-- check_results.py: begin -->", "<!-- check_results.py: end -->"


def markdown(title: str, rows: dict[str, list[tuple[str, str]]]) -> str:
    """One table: a row per task, a column per quantity (the claims' descriptions minus the task)."""
    header = [what for what, _ in next(iter(rows.values()))]
    lines = [f"**{title}**", "", "| task | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    lines += [f"| {task} | " + " | ".join(v for _, v in claims) + " |" for task, claims in rows.items()]
    return "\n".join(lines)


def block() -> str:
    import references as ref

    seeds = len(ref.raw_setup("glue-sst2", "sweep.seeds"))
    pairs = seeds * (seeds - 1) // 2
    glue_layers = len(exported.read_sidecar(ROOT / "results" / TASKS["SST-2"], "amplification")["layers"])
    dec_layers = len(exported.read_sidecar(ROOT / "results" / DECODER["VADER"], "amplification")["layers"])
    dec_seeds = len(ref.raw_setup("vader-smollm2", "sweep.seeds"))
    dec_ranks = len(ref.raw_setup("vader-smollm2", "sweep.r"))
    third = dec_layers // 3
    mid = f"L{middle('SST-2')}"
    gpu = ref.trained_with("vader-smollm2", "device_name").removeprefix("NVIDIA ")
    w0 = decoder_data("VADER", "phi_w0")
    top_i = int(w0[w0.module == "q"].i.max())
    tables = [(f"LoRA's best cell group (targets, r) by the median over {seeds} seeds of the main metric ×100, and "
               "how far apart the q,v medians of r = 1…64 lie (points)", best_lora),
              (f"φ (Figs. 3, 4), target set q,v, {mid}, side A (right singular vectors of A). \"ranks\": "
               f"φ(A_8, A_64, i = 1, j = 1), median over {seeds} seeds; \"seeds\": φ(A_64, A'_64, 1, 1), median "
               f"over the {pairs} seed pairs, and the mean of φ over i, j ≤ 16 over the {pairs} pairs; a Haar-random pair "
               "of r = 64 beside it", phi_claims),
              ("Table 7 and the amplification factor, ΔWq of target set q,v (α/r included). \"ΔW / random\": "
               "‖UᵀW0Vᵀ‖_F with U, V the top-r singular vectors of ΔW over the same with random U, V, median "
               f"over {seeds} seeds at {mid}; amplification ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F, median over {seeds} seeds at {mid} and over "
               f"{glue_layers} layers × {seeds} seeds", table7),
              ("Spectra of ΔW (α/r included): rank_90, the smallest k whose top-k singular values hold 90% "
               f"of Σσ², of the q and v matrices, median over {glue_layers} layers × 2 matrices × {seeds} seeds; full "
               "fine-tuning's stable rank ‖ΔW‖_F²/σ_max² beside it", spectra),
              ("Intruder dimensions: among the top 10 singular vectors of W0 + ΔW, those with |cos| < 0.5 "
               f"against every singular vector of W0, summed over the {2 * glue_layers} q and v matrices of a cell, mean over "
               f"{seeds} seeds (full fine-tuning: its q and v matrices)", intruders)]
    parts = ["**Table 2's shape** (dev metric ×100 at each cell's best evaluation, median ± half the range "
             f"over {seeds} seeds)\n\n" + table2()]
    parts += [markdown(title, {task: fn(task) for task in TASKS}) for title, fn in tables]
    parts.append(f"**SmolLM2-135M, VADER and E2E** ({gpu}, `results/vader-smollm2`, `results/e2e-smollm2`), "
                 f"median over {dec_seeds} seeds: VADER dev accuracy ×100 / final training loss (completion tokens); E2E "
                 "BLEU / ROUGE-L of greedy decoding on the test set\n\n" + decoder_metrics())
    parts.append(f"**SmolLM2 Table 7 and spectra**, LoRA on all-linear, median over {dec_layers} layers × {dec_seeds} seeds: "
                 "amplification ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F; \"ΔW / random\" ‖UᵀW0Vᵀ‖_F with U, V the top-r singular "
                 "vectors of ΔW over the same with random U, V; rank_90 of ΔW\n\n" + decoder_geometry())
    parts.append(markdown(f"SmolLM2 full fine-tuning's ΔW per matrix kind (VADER), median over {dec_layers} layers × {dec_seeds} "
                          "seeds: rank_90 of the n = min(d, k) singular values, and the stable rank",
                          {"VADER": decoder_full("VADER")}))
    parts.append(markdown("SmolLM2 intruder dimensions (ε = 0.5, top 10 of W0 + ΔW) summed over a cell's "
                          f"matrices (q,v: {2 * dec_layers}; all-linear and full fine-tuning: {7 * dec_layers}), mean over {dec_seeds} seeds",
                          {task: decoder_intruders(task) for task in DECODER}))
    parts.append(markdown(f"SmolLM2 φ (Figs. 3, 4, 7), VADER, LoRA q,v (the φ rerun), side A, {dec_layers} layers. \"ranks\": "
                          f"φ(A_8, A_64, 1, 1), median over {dec_layers} layers × {dec_seeds} seeds and the share of them above 0.5; "
                          f"\"seeds\": φ(A_64, A'_64, 1, 1), median over {dec_layers} layers × {pairs} seed pairs, then over "
                          f"layers 0–{third - 1} and {dec_layers - third}–{dec_layers - 1} × {pairs} pairs; the mean over i, j ≤ 16 over {dec_layers} layers × {pairs} pairs; "
                          "a Haar-random pair of r = 64 beside it", {"VADER": decoder_phi("VADER")}))
    parts.append(markdown(f"SmolLM2 Fig. 8, VADER: φ(Wq, A_r, i = {top_i}, j ≤ 4), i.e. the top 10% of Wq's {ref.paper('smollm2.d', 'd')} "
                          f"directions against the adapter's top j, median over {dec_layers} layers × 4 j, seed 0",
                          {"VADER": decoder_phi_w0("VADER")}))
    parts.append(markdown("SmolLM2 φ rerun (VADER, q,v only) against the first run's q,v cells: dev accuracy "
                          f"×100, median over {dec_ranks} ranks × {dec_seeds} seeds, and the largest difference of one cell",
                          {"VADER": decoder_rerun("VADER")}))
    return "\n\n".join([BEGIN, *parts, END])


# ---------------------------------------------------------------------------------------------
# What the prose quotes (figures/quoted.py references), beyond the block


def t2(column: str, method: str) -> str:
    """A cell of the block's Table 2 ("SST-2 accuracy", "LoRA q,v r=8")."""
    task, metric = next((t, m) for t, c, m in [(t, c, m) for t, c, m in COLUMNS] if f"{t} {m}" == column)
    col = next(c for t, c, m in COLUMNS if f"{t} {m}" == column)
    res = data(task, "results")
    mask = res.method == METHODS[method]
    if METHODS[method] == "lora":
        mask &= (res.targets == "q,v") & (res.r == 8)
    return seed_median(res.loc[mask, col])


CLAIMS = {"best": best_lora, "phi": phi_claims, "t7": table7, "spectra": spectra, "intruders": intruders,
          "dec_full": decoder_full, "dec_intruders": decoder_intruders, "dec_phi": decoder_phi,
          "dec_phi_w0": decoder_phi_w0, "dec_rerun": decoder_rerun}


def claim(kind: str, task: str, what: str) -> str:
    """One number of the block's tables: claim("phi", "SST-2", "ranks ΔWq")."""
    return dict(CLAIMS[kind](task))[what]


def over(kind: str, what: str, tasks=None) -> list[str]:
    """The same claim on each GLUE task (or the tasks named)."""
    return [claim(kind, t, what) for t in (tasks or TASKS)]


def group_medians(task: str) -> pd.DataFrame:
    """LoRA's main metric ×100 per (r, target set), median over seeds: the rows of Table 6."""
    res = data(task, "results")
    return (res[res.method == "lora"].groupby(["r", "targets"]).value.median() * 100).unstack()


def order_breaks(sets: tuple[str, ...] = ("q", "q,v", "q,k,v,o")) -> str:
    """Where the medians are not strictly increasing along `sets`: "MRPC at r = 2, 4"; "nowhere"."""
    out = []
    for task in TASKS:
        t = group_medians(task).round(1)
        bad = [int(r) for r, row in t.iterrows() if not all(row[a] < row[b] for a, b in zip(sets, sets[1:]))]
        if bad:
            out.append(f"{task} at r = {', '.join(map(str, bad))}")
    return "; ".join(out) or "nowhere"


def q_rises(task: str) -> str:
    """How far Wq alone's median moves over r: "77.2 at r = 1 to 81.1 at r = 16" (max − min, points)."""
    q = group_medians(task)["q"].round(1)
    return f"{q.max() - q.min():.1f}"


def decoder_cell(task: str, targets: str, r: int) -> str:
    res = decoder_data(task, "results")
    cells = res[(res.method == "lora") & (res.targets == targets) & (res.r == r)]
    return (accuracy_and_loss if task == "VADER" else bleu_and_rouge)(cells)


def decoder_span(task: str, targets: str, i: int) -> str:
    ranks = sorted(decoder_data(task, "results").query("method == 'lora'").r.unique())
    return span([part(decoder_cell(task, targets, r), i) for r in ranks])


def decoder_gap(task: str, i: int, spec: str = ".1f") -> str:
    """all-linear minus q,v over r: "0.6–1.8" (part i of the cells)."""
    ranks = sorted(decoder_data(task, "results").query("method == 'lora'").r.unique())
    gaps = [num(part(decoder_cell(task, "all-linear", r), i)) - num(part(decoder_cell(task, "q,v", r), i))
            for r in ranks]
    return span([f(g, spec) for g in gaps])


def decoder_geo(what: str, r: int) -> str:
    """The span over both tasks and every matrix kind of the decoder geometry table's column."""
    values = []
    for task in DECODER:
        amp = decoder_data(task, "amplification")
        amp = amp[amp.targets == "all-linear"].assign(ratio=lambda t: t.proj_delta_w / t.proj_random)
        values += [f"{amp[(amp.module == m) & (amp.r == r)][what].median():.2f}" for m in MODULES]
    return span(values)


def decoder_rank90(r: int = 64) -> str:
    values = []
    for task in DECODER:
        t = decoder_data(task, "spectrum_metrics")
        t = t[(t.method == "lora") & (t.targets == "all-linear") & (t.r == r)]
        values += [f"{t[t.module == m].rank_90.median():.0f}" for m in MODULES]
    return span(values)


def full_vader() -> str:
    """Full fine-tuning on VADER: dev accuracy ×100 / final training loss, median over seeds."""
    vader = decoder_data("VADER", "results")
    return accuracy_and_loss(vader[vader.method == "full"])


def dec_intruders_max() -> str:
    """The most intruders of any LoRA cell group in the decoder intruder table."""
    values = [v for task in DECODER for what, v in decoder_intruders(task) if what != "full fine-tuning" and v != "–"]
    return max(values, key=num)


def cells(task: str) -> str:
    """How many cells a committed GLUE sweep trained (its results table's rows)."""
    return f"{len(data(task, 'results'))}"


def t6(task: str, targets: str, r: int) -> str:
    """A cell of the task's Table 6: LoRA's main metric ×100 at (targets, r), median ± half-range."""
    res = data(task, "results")
    return seed_median(res[(res.method == "lora") & (res.targets == targets) & (res.r == r)].value)


def within_spread(column: str, method: str = "LoRA q,v r=8", against: str = "Full fine-tuning") -> bool:
    """Whether two Table 2 cells' medians lie within the sum of their half-ranges of each other."""
    (a, ha), (b, hb) = ([float(x) for x in t2(column, m).split(" ± ")] for m in (method, against))
    return abs(a - b) <= ha + hb


def tasks_where(column_of: dict, test) -> str:
    """The tasks (comma-separated, "and" before the last) where test(column) holds."""
    hits = [t for t, c in column_of.items() if test(c)]
    return ", ".join(hits[:-1]) + (" and " if len(hits) > 1 else "") + hits[-1] if hits else "none"


MAIN = {t: f"{t} {m}" for t, c, m in COLUMNS if c == "value"}


def crossing_one(task: str) -> str:
    """Between which ranks the median amplification factor (ΔWq of q,v, middle layer) falls below 1."""
    amp = data(task, "amplification")
    at = amp[(amp.targets == "q,v") & (amp.module == "q") & (amp.layer == middle(task))]
    med = at.groupby("r").amplification.median()
    pairs = [(a, b) for a, b in zip(med.index, med.index[1:]) if med[a] >= 1 > med[b]]
    return " and ".join(f"between r = {a} and r = {b}" for a, b in pairs) or "nowhere in the grid"


def rank90_gap() -> str:
    """Full fine-tuning's rank_90 over LoRA q,v r = 64's, per task (the spectra claims): "40–68"."""
    return span([f(num(claim("spectra", t, "full fine-tuning")) / num(claim("spectra", t, "LoRA q,v r = 64")), ".0f")
                 for t in TASKS])


def namespace() -> dict:
    """The functions a reference of figures/RESULTS.md may call."""
    import references as ref

    return {**{n: getattr(ref, n) for n in ("num", "span", "f", "diff", "ratio", "part", "lr", "show", "setup",
                                           "raw_setup", "cap", "csv_column", "trained_with", "raw_setup_cells", "paper", "paper_table", "csv_cell", "timing")},
            "t2": t2, "full_vader": full_vader, "dec_intruders_max": dec_intruders_max, "claim": claim, "over": over, "order_breaks": order_breaks, "q_rises": q_rises,
            "middle": middle, "decoder_cell": decoder_cell, "decoder_span": decoder_span, "decoder_gap": decoder_gap,
            "decoder_geo": decoder_geo, "decoder_rank90": decoder_rank90, "cells": cells, "TASKS": list(TASKS),
            "selection": selection, "made_dirty": made_dirty,
            "old_selection": old_selection, "t6": t6,
            "within_spread": within_spread, "tasks_where": tasks_where, "MAIN": MAIN, "rank90_gap": rank90_gap, "crossing_one": crossing_one, "MADE_BEFORE_THE_CHECK": list(MADE_BEFORE_THE_CHECK)}


def selection(folder: str) -> str:
    """How a committed sweep chose the evaluation its metrics come from (from its resolved spec)."""
    import references as ref

    size = (ref.resolved_spec(folder).get("data") or {}).get("validation_size")
    if not size:
        return "the best of its evaluations on the reported set itself"
    return f"the evaluation best on {size:,} training examples held out for it (never trained on)"


def old_selection() -> list[str]:
    """The committed sweeps whose reported metrics were selected on the reported set."""
    import references as ref

    folders = sorted(p.parent.parent.name for p in (ROOT / "results").glob("*/data/results.json"))
    folders += sorted(p.parent.name for p in (ROOT / "results").glob("*/spec.json"))
    return [d for d in folders if not (ref.resolved_spec(d).get("data") or {}).get("validation_size")]


def _provenances(value):
    if isinstance(value, dict):
        if "git_dirty" in value:
            yield value
        for v in value.values():
            yield from _provenances(v)
    elif isinstance(value, list):
        for v in value:
            yield from _provenances(v)


def made_dirty() -> list[str]:
    """Folders under figures/results/ with a file whose provenance says git_dirty, or that does not
    name where it ran (device name, torch's CUDA version, the driver)."""
    import json

    out = set()
    for path in (ROOT / "results").rglob("*.json"):
        for prov in _provenances(json.loads(path.read_text())):
            if prov["git_dirty"] is not False or not {"device_name", "torch_cuda", "cuda_driver"} <= set(prov):
                out.add(path.relative_to(ROOT / "results").parts[0])
    return sorted(out)


# Committed before provenance named the driver and before this check; each to be rerun from a
# clean tree (commit first, then run) when a GPU is lent. A folder leaves the list once clean.
MADE_BEFORE_THE_CHECK = ("e2e-smollm2", "glue-cola", "glue-mrpc", "glue-rte", "glue-sst2", "glue-stsb",
                         "lr-grid-cpu", "lr-grid-sst2", "vader-smollm2", "vader-smollm2-cpu")


def check_provenance() -> list[str]:
    dirty = set(made_dirty())
    return ([f"figures/results/{d}: made from a dirty tree or without device, driver and CUDA versions in its "
             "provenance (commit first, then run)" for d in sorted(dirty - set(MADE_BEFORE_THE_CHECK))]
            + [f"figures/results/{d}: its provenance is complete now; take it off MADE_BEFORE_THE_CHECK"
               for d in sorted(set(MADE_BEFORE_THE_CHECK) - dirty)])


def bench_namespace() -> dict:
    """What benchmarks/RESULTS.md and README.md may quote: the tables benchmarks printed into
    benchmarks/RESULTS.md (`bench`), and figures/RESULTS.md's functions."""
    import references as ref

    text = DOCUMENTS["benchmarks/RESULTS.md"].read_text()
    return {**namespace(), "bench": lambda after, row, column: ref.printed(text, after, row, column)}


NAMESPACES = {"figures/RESULTS.md": lambda: namespace(), "benchmarks/RESULTS.md": bench_namespace,
              "README.md": bench_namespace}


DOCUMENTS = {"figures/RESULTS.md": REPO_ROOT / "figures" / "RESULTS.md",
             "benchmarks/RESULTS.md": REPO_ROOT / "benchmarks" / "RESULTS.md",
             "README.md": REPO_ROOT / "README.md"}
LINTED = ("figures/RESULTS.md",)  # every number of its prose is a reference


def labels() -> dict[str, set[str]]:
    """Grid points that the prose may name by hand ("r = 8", "ε = 0.5", "i, j ≤ 16"): the ranks of
    every committed sweep, the intruder thresholds computed, and the φ tables' cut (export_results.py)."""
    import references as ref

    ranks = {str(r) for folder in sorted(p.parent.parent.name for p in (ROOT / "results").glob("*/data/results.json"))
             for r in ref.raw_setup(folder, "sweep.r")}
    eps = {f"{e:g}" for task in TASKS for e in data(task, "intruders").epsilon.unique()}
    return {"r": ranks, "ε": eps, "i": {"1", "16"}, "j": {"1", "16"}}


def check_documents(texts: dict[str, str]) -> list[str]:
    """Every problem of the documents (name → text): a block that differs from the data, a reference
    whose value is stale, a number typed by hand in a linted document's prose."""
    import quoted

    problems = []
    for name, text in texts.items():
        if name == "figures/RESULTS.md":
            if BEGIN not in text or END not in text:
                problems.append(f"{name}: no block between {BEGIN} and {END}")
            elif text[text.index(BEGIN):text.index(END) + len(END)] != block():
                problems.append(f"{name}: the numbers between the markers differ from the committed data")
        spaces = NAMESPACES[name]()
        problems += [f"{name}: {s}" for s in quoted.stale(text, spaces)]
        if name in LINTED:
            problems += [f"{name}: line {n}: a number typed by hand (write it as a reference): {line}"
                         for n, line in quoted.typed_numbers(text, ((BEGIN, END),), labels())]
    return problems


def render_documents(texts: dict[str, str]) -> dict[str, str]:
    import quoted

    out = {}
    for name, text in texts.items():
        if name == "figures/RESULTS.md":
            text = text.replace(text[text.index(BEGIN):text.index(END) + len(END)], block())
        out[name] = quoted.render(text, NAMESPACES[name]())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 unless every block and quoted number equals the data")
    ap.add_argument("--write", action="store_true", help="write the block and every quoted number from the data")
    args = ap.parse_args()
    if not (args.check or args.write):
        print(block())
        return
    texts = {name: path.read_text() for name, path in DOCUMENTS.items()}
    if args.write:
        for name, text in render_documents(texts).items():
            if text != texts[name]:
                DOCUMENTS[name].write_text(text)
                print(f"wrote {name}")
        texts = {name: path.read_text() for name, path in DOCUMENTS.items()}
    problems = check_documents(texts) + check_provenance()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(f"{len(problems)} problem(s); python figures/check_results.py --write renders the references "
                 "and the block from the committed data (then reread the sentences around them)")


if __name__ == "__main__":
    main()
