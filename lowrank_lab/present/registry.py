"""The one list of figures and tables: what each is in the paper (Hu et al. 2021), which cached
analysis tables it needs, how to draw it, its caption and what to do when its inputs are missing.

Read by ``lowrank-lab report`` and ``lowrank-lab tables`` (``workflow.report``), by every script in
figures/ (one entry name each) and by the figure tests (parametrised over ``ENTRIES``). An entry's
``render(frames, view)`` takes {table name: DataFrame} and a ``View`` (layer, φ side) and returns a matplotlib Figure (kind
"figure") or a display DataFrame (kind "table"); it raises ``MissingData`` when the frames lack the
cells it needs, and ``skip_note`` says how to get them. No torch, no file.
"""

from __future__ import annotations

import pandas as pd

from lowrank_lab.analysis import learning_rate as lr
from lowrank_lab.maths.nlg_metrics import E2E_METRICS, caption as nlg_caption
from lowrank_lab.present import after_paper, curves, lr_figures, plotting, tables
from lowrank_lab.present.entry import Entry, Frames, View
from lowrank_lab.present.select import spread_layers
from lowrank_lab.store.tables import (AMPLIFICATION, DYNAMICS_PHI, DYNAMICS_SPECTRUM, ECKART_YOUNG, INTRUDERS,
                                      LEARNING_CURVES, MITIGATION_CORRELATION, MITIGATION_TRADEOFF, PHI, PHI_W0,
                                      RESULTS, SPECTRUM, SPECTRUM_METRICS, TRUNCATION, TRUNCATION_MEDIANS)

RERUN = "then run `lowrank-lab report SWEEP` (it computes the missing tables)"


def _layers(layer: int | None) -> list[int] | None:
    return None if layer is None else [layer]


def _tuned(frames: Frames) -> pd.DataFrame:
    """The results, each cell group at its best learning rate when the sweep varies it (``TUNED``)."""
    results = frames[RESULTS]
    return lr.at_best_lr(results, "value") if lr.has_lr_axis(results) else results


def _table2(frames: Frames, view: View) -> pd.DataFrame:
    """Table 2 keeps the paper's LoRA row (q,v at r = 8) when the sweep has it, else every LoRA row."""
    results = tables.in_percent(_tuned(frames))
    has_paper_row = ((results["targets"] == "q,v") & (results["r"] == 8)).any()
    table = tables.method_table(results, [("q,v", 8)] if has_paper_row else None)
    metric_of = results.groupby("task")["metric"].first()
    return table.rename(columns={task: f"{task}: {metric}" for task, metric in metric_of.items()})


# Hu et al. 2021, Table 2 (RoBERTa rows; * numbers from prior work, † the Houlsby et al. setup), in %.
_T2_ROWS = [
    ("RoBERTa-base FT*", "125.0M", "87.6 94.8 90.2 63.6 92.8 91.9 78.7 91.2 86.4"),
    ("RoBERTa-base BitFit*", "0.1M", "84.7 93.7 92.7 62.0 91.8 84.0 81.5 90.8 85.2"),
    ("RoBERTa-base Adpt^D*", "0.3M", "87.1±.0 94.2±.1 88.5±1.1 60.8±.4 93.1±.1 90.2±.0 71.5±2.7 89.7±.3 84.4"),
    ("RoBERTa-base Adpt^D*", "0.9M", "87.3±.1 94.7±.3 88.4±.1 62.6±.9 93.0±.2 90.6±.0 75.9±2.2 90.3±.1 85.4"),
    ("RoBERTa-base LoRA", "0.3M", "87.5±.3 95.1±.2 89.7±.7 63.4±1.2 93.3±.3 90.8±.1 86.6±.7 91.5±.2 87.2"),
    ("RoBERTa-large FT*", "355.0M", "90.2 96.4 90.9 68.0 94.7 92.2 86.6 92.4 88.9"),
    ("RoBERTa-large LoRA", "0.8M", "90.6±.2 96.2±.5 90.9±1.2 68.2±1.9 94.9±.3 91.6±.1 87.4±2.5 92.6±.2 89.0"),
    ("RoBERTa-large Adpt^P†", "3.0M", "90.2±.3 96.1±.3 90.2±.7 68.3±1.0 94.8±.2 91.9±.1 83.8±2.9 92.1±.7 88.4"),
    ("RoBERTa-large Adpt^P†", "0.8M", "90.5±.3 96.6±.2 89.7±1.2 67.8±2.5 94.8±.3 91.7±.2 80.1±2.9 91.9±.4 87.9"),
    ("RoBERTa-large Adpt^H†", "6.0M", "89.9±.5 96.2±.3 88.7±2.9 66.5±4.4 94.7±.2 92.1±.1 83.4±1.1 91.0±1.7 87.8"),
    ("RoBERTa-large Adpt^H†", "0.8M", "90.3±.3 96.3±.5 87.7±1.7 66.3±2.0 94.7±.2 91.5±.1 72.9±2.9 91.5±.5 86.4"),
    ("RoBERTa-large LoRA†", "0.8M", "90.6±.2 96.2±.5 90.2±1.0 68.2±1.9 94.8±.3 91.6±.2 85.2±1.1 92.3±.5 88.6"),
]
TABLE2_PAPER = pd.DataFrame(
    [[n, p, *v.split()] for n, p, v in _T2_ROWS],
    columns=["model & method", "trainable parameters", *[f"{t} (%)" for t in
             ("MNLI", "SST-2", "MRPC", "CoLA", "QNLI", "QQP", "RTE", "STS-B", "avg")]]).set_index("model & method")

# Hu et al. 2021, Table 1: one forward pass of GPT-2 medium, ms (mean ± sd over 100 trials, NVIDIA Quadro
# RTX8000); |Θ| the adapters' trainable parameters. benchmarks/bench_latency.py measures the same shape.
TABLE1_PAPER = pd.DataFrame(
    {"b=32, n=512 (adapter 0.5M)": ["1449.4±0.8", "1482.0±1.0 (+2.2%)", "1492.2±1.0 (+3.0%)"],
     "b=16, n=256 (adapter 11M)": ["338.0±0.6", "354.8±0.5 (+5.0%)", "366.3±0.5 (+8.4%)"],
     "b=1, n=128 (adapter 11M)": ["19.8±2.7", "23.9±2.1 (+20.7%)", "25.8±2.2 (+30.3%)"]},
    index=pd.Index(["Fine-Tune/LoRA", "Adapter^L", "Adapter^H"], name="GPT-2 medium"))

PHI_SIDE = "{side}"
SEEDS_NOTE = "add sweep.seeds = [0, 1] (two seeds at one rank), " + RERUN
RANKS_NOTE = "set sweep.r to two ranks or more, e.g. sweep.r = [8, 64], " + RERUN
PCT = ("the main metric ×100 (the paper's unit), median ± half the range over seeds; nothing else pooled; "
       "when the sweep varies the learning rate, each cell group (method, targets, r) at its best one, by the "
       "seed-median of the best evaluation's main metric")
LR_NOTE = ("add a learning-rate axis, e.g. sweep.lr = [1e-4, 3e-4, 1e-3, 3e-3] (and sweep.full_lr for full "
           "fine-tuning's own grid), then rerun `lowrank-lab rank-sweep`")

FIGURES: tuple[Entry, ...] = (
    Entry(name="fig3_phi_ranks",
          paper="Figure 3",
          title="φ between two ranks, middle layer",
          kind="figure",
          needs=(PHI,),
          draw=lambda f, v: plotting.phi_ranks_figure(f[PHI], _layers(v.layer), side=v.side, modules=v.modules),
          caption="φ(A_r1, A_r2, i, j) between the adapters of the largest rank r2 and of r1 = 8 (else the largest below "
                  "r2) of one seed (the smallest), targets q,v when present, at the middle layer (layers[(n − 1) // 2]), for ΔWq "
                  f"and ΔWv; left: the full r1×r2 grid, right: the r1×r1 corner with j > i blank; {PHI_SIDE}.",
          skip_note=RANKS_NOTE,
          paper_note="Paper (GPT-3, layer 48, r = 8 vs 64): the top direction is shared, φ > 0.5 at i = j = 1."),
    Entry(name="fig4_phi_seeds",
          paper="Figure 4",
          title="φ between two seeds at the largest rank",
          kind="figure",
          needs=(PHI,),
          draw=lambda f, v: plotting.phi_seeds_figure(f[PHI], _layers(v.layer), side=v.side, modules=v.modules,
               random_panel=True),
          caption="φ(A_r, A'_r, i, j) between the two smallest seeds at the sweep's largest rank, middle layer, ΔWq "
                  f"and ΔWv, and two random Gaussian matrices of the same shape; colour scale to the 99th percentile; "
                  f"{PHI_SIDE}.",
          skip_note=SEEDS_NOTE,
          paper_note="Paper (r = 64): ΔWq shares more directions across seeds than ΔWv; random Gaussian pairs share none."),
    Entry(name="fig6_phi_ranks_layers",
          paper="Figure 6",
          title="φ between ranks, across layers",
          kind="figure",
          needs=(PHI,),
          draw=lambda f, v: plotting.phi_ranks_figure(f[PHI], spread_layers(f[PHI]["layer"].dropna()), modules=v.modules,
               side=v.side),
          caption="As Figure 3, one row per layer: every layer of a model of up to 6, else the first, ⅓, ⅔ and last "
                  f"(the paper's 1, 32, 64, 96 of 96); one seed; {PHI_SIDE}.",
          skip_note=RANKS_NOTE,
          paper_note="Paper: the conclusion of Figure 3 holds in layers 1, 32, 64 and 96."),
    Entry(name="fig7_phi_seeds_layers",
          paper="Figure 7",
          title="φ between seeds, across layers",
          kind="figure",
          needs=(PHI,),
          draw=lambda f, v: plotting.phi_seeds_figure(f[PHI], spread_layers(f[PHI]["layer"].dropna()), modules=v.modules,
               side=v.side, random_panel=False),
          caption="As Figure 4 without the random panel: a row per matrix (ΔWq, ΔWv), a column per layer (as Figure 6); "
                  f"{PHI_SIDE}.",
          skip_note=SEEDS_NOTE,
          paper_note="Paper: as Figure 4, in layers 1, 32, 64 and 96."),
    Entry(name="fig8_phi_w0",
          paper="Figure 8",
          title="φ between W0's and ΔW's directions",
          kind="figure",
          needs=(PHI_W0,),
          draw=lambda f, v: plotting.phi_w0_figure(f[PHI_W0], v.layer, side=v.side, module=v.module),
          caption="φ(Wq, A_r, i, j): i over the top singular directions of the frozen Wq (right ones for sides A and "
                  "dW_right, left ones for B and dW_left; up to ~10% of them), "
                  "j over the adapter's, for ranks 4, 8, 64 when present (else the three largest) and a random basis "
                  f"of the largest rank; middle layer, one seed (the smallest), targets q,v when present; {PHI_SIDE}.",
          skip_note="needs the base model's weights W0: run `lowrank-lab subspace SWEEP --base MODEL` when the model "
                    "named in the spec is not available here, " + RERUN,
          paper_note="Paper: the top 4 directions of ΔWq and the top 10% of Wq's barely exceed φ = 0.2; larger r picks up "
                     "more of W's directions."),
    Entry(name="figH4_amplification",
          paper="App. H.4",
          title="Amplification factor against r",
          kind="figure",
          needs=(AMPLIFICATION,),
          draw=lambda f, v: curves.amplification_figure(f[AMPLIFICATION]),
          caption="‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F (U, V: ΔW's top-r singular vectors; ΔW includes α/r) against r, one panel per "
                  "target set, one line per matrix: the median over every layer and seed, the shaded band the "
                  "interquartile range over them; stars: the paper's two GPT-3 values.",
          skip_note="run `lowrank-lab amplify SWEEP` (needs the base model's W0)",
          paper_note="Paper (GPT-3 ΔWq, layer 48): 21.5 at r = 4 (\"as large as 20\"), about 1.9 at r = 64 (3.57/1.90)."),
    Entry(name="fig_spectrum",
          paper="§7.2 (intrinsic rank)",
          title="Spectrum of ΔW, energy and rank",
          kind="figure",
          needs=(SPECTRUM, SPECTRUM_METRICS),
          draw=lambda f, v: curves.spectrum_figure(f[SPECTRUM], f[SPECTRUM_METRICS], v.layer),
          caption="(a) singular values of ΔWq (ΔW includes α/r) at the middle layer, one seed (the smallest), one line "
                  "per r, full fine-tuning's in black; (b) their cumulative energy; (c) rank_90, stable and effective "
                  "rank against r, the median over every layer and seed.",
          skip_note="run `lowrank-lab spectrum SWEEP`; for the black full fine-tuning line add sweep.baselines = [\"full\"]",
          paper_note="Biderman et al. 2024: full fine-tuning's ΔW needs 10–100× the rank of typical LoRA for 90% energy."),
    Entry(name="fig_intruders",
          paper="Shuttleworth et al. 2024, Fig. 1",
          title="Intruder dimensions against ε",
          kind="figure",
          needs=(INTRUDERS,),
          draw=lambda f, v: curves.intruders_figure(f[INTRUDERS]),
          caption="Among the top 10 singular vectors of W0 + ΔW, those whose largest |cos| with every singular vector "
                  "of W0 is below ε, summed over the adapted matrices (targets q,v when present) and averaged over "
                  "seeds, one line per r; full fine-tuning over the same matrices dashed.",
          skip_note="run `lowrank-lab spectrum SWEEP`; for the full fine-tuning line add sweep.baselines = [\"full\"]",
          paper_note="Shuttleworth et al. 2024: LoRA creates high-ranking intruder dimensions; full fine-tuning few."),
    Entry(name="fig_eckart_young",
          paper="Eckart–Young (not in the paper)",
          title="Best rank-k error of full fine-tuning's ΔW",
          kind="figure",
          needs=(ECKART_YOUNG,),
          draw=lambda f, v: curves.eckart_young_figure(f[ECKART_YOUNG]),
          caption="‖ΔW_full − best rank-k‖_F / ‖ΔW_full‖_F against k, one grey line per layer and their median in "
                  "black, one seed (the smallest); red: each LoRA ΔW's distance from ΔW_full at k = r, the median over "
                  "layers; dotted: the sweep's ranks.",
          skip_note="add sweep.baselines = [\"full\"], " + RERUN),
    Entry(name="fig_lr_curves",
          paper="LoRA Without Regret (2025), Fig. 2",
          title="Dev metric and loss against learning rate",
          kind="figure",
          needs=(RESULTS,),
          draw=lambda f, v: lr_figures.lr_curves_figure(f[RESULTS]),
          caption="The main dev metric and the dev loss at the last evaluation against the learning rate, one line per "
                  "method, target set and r: the median over seeds, the band min–max over seeds; full fine-tuning "
                  "black and dashed (its own learning-rate grid, sweep.full_lr).",
          skip_note=LR_NOTE,
          paper_note="Schulman et al. 2025: under 1/r scaling the best LoRA learning rate is nearly the same for every r, "
                     "about 10× full fine-tuning's."),
    Entry(name="fig_learning_curves",
          paper="LoRA Without Regret (2025), Fig. 1",
          title="Learning curves at the best learning rate",
          kind="figure",
          needs=(LEARNING_CURVES, RESULTS),
          draw=lambda f, v: lr_figures.learning_curves_figure(f[LEARNING_CURVES], f[RESULTS]),
          caption="The training loss (mean over the last train.log_every steps) against step, log–log, for each method, "
                  "target set and r at its best learning rate (by the seed-median of the best evaluation's main "
                  "metric; the only one without a learning-rate axis): the median over seeds.",
          skip_note="set train.log_every > 0 (default 10) and rerun `lowrank-lab rank-sweep`",
          paper_note="Schulman et al. 2025: high-rank LoRA follows full fine-tuning's curve; low ranks fall behind once "
                     "their capacity is used."),
    Entry(name="fig_targets_by_rank",
          paper="LoRA Without Regret (2025), Fig. 3",
          title="Attention-only against more matrices",
          kind="figure",
          needs=(RESULTS,),
          draw=lambda f, v: lr_figures.targets_by_rank_figure(f[RESULTS]),
          caption="The main dev metric (best evaluation) against r for each LoRA target set, e.g. q,v against q,k,v,o "
                  "(against all-linear on decoders): the median over seeds, band min–max, each group at its best "
                  "learning rate when the sweep varies it; full fine-tuning dashed.",
          skip_note="add a second target set, e.g. sweep.targets = [\"q,v\", \"q,k,v,o\"], then rerun `lowrank-lab rank-sweep`",
          paper_note="Schulman et al. 2025: attention-only LoRA is clearly worse than LoRA that includes the MLP."),
)

TABLES: tuple[Entry, ...] = (
    Entry(name="table2_methods",
          paper="Table 2",
          title="Methods: full fine-tuning, BitFit, head only, adapters, prefix tuning, LoRA",
          kind="table",
          needs=(RESULTS,),
          draw=_table2,
          caption=f"Trainable parameters and {PCT}; LoRA on q,v at r = 8 (the paper's row) when present, else every LoRA "
                  "cell. Adapter^H: bottleneck adapters after attention and after the MLP (Houlsby et al. 2019), Adapter^P: "
                  "after the MLP only (Pfeiffer et al. 2021), LayerNorms frozen; prefix: Li & Liang's key/value prefix as "
                  "PEFT's. Their trainable parameters are counted from their tensors and equal the formula beside them "
                  "(Hu et al. 2021, §5.1: L̂_Adpt·(2·d_model·m + m + d_model) with L̂_LN = 0; the prefix's 2·L·l_p·d_kv, "
                  "where the paper's prefix-layer count is L·d_model·l_p).",
          skip_note="add sweep.baselines = [\"full\", \"bitfit\", \"head\", \"houlsby\", \"pfeiffer\", \"prefix\"] for the "
                    "baseline rows, then rerun `lowrank-lab rank-sweep`",
          paper_note="Paper (RoBERTa and DeBERTa on GLUE): LoRA on q,v at "
                     "r = 8 matches full fine-tuning with a fraction of its trainable parameters; at 0.8M parameters it beats "
                     "Adapter^H and Adapter^P on RoBERTa-large.",
          paper_table=TABLE2_PAPER),
    Entry(name="table5_budget",
          paper="Table 5",
          title="Which matrices to adapt at a fixed budget",
          kind="table",
          needs=(RESULTS,),
          draw=lambda f, v: tables.budget_table(tables.in_percent(_tuned(f))),
          caption=f"One rank per target set with r × (number of matrix kinds) fixed: the budget shared by the most "
                  f"target sets; {PCT}.",
          skip_note="set sweep.budget_rank (e.g. 8) to train every target set at the same "
                    "budget, then rerun `lowrank-lab rank-sweep`",
          paper_note="Paper (GPT-3, 18M parameters): adapting Wq and Wv "
                     "at r = 4 beats Wq alone at r = 8.",
          paper_table=tables.one_decimal(pd.DataFrame({"weight type": ["Wq", "Wk", "Wv", "Wo", "Wq,Wk", "Wq,Wv", "Wq,Wk,Wv,Wo"],
                      "r": [8, 8, 8, 8, 4, 4, 2], "WikiSQL (%)": [70.4, 70.0, 73.0, 73.2, 71.4, 73.7, 73.7],
                      "MultiNLI (%)": [91.0, 90.8, 91.0, 91.3, 91.3, 91.3, 91.7]}).set_index("weight type"))),
    Entry(name="table6_rank_by_target",
          paper="Table 6",
          title="Main metric by target set and r",
          kind="table",
          needs=(RESULTS,),
          draw=lambda f, v: tables.rank_target_table(tables.in_percent(_tuned(f))).rename(columns=lambda r: f"r={r}"),
          caption=f"Rows: target set (the paper's order), columns: r; {PCT} (scaling rules and inits are pooled when "
                  "the sweep has several).",
          skip_note="set sweep.r and sweep.targets, then rerun `lowrank-lab rank-sweep`",
          paper_note="Paper (§7.2): LoRA is competitive at a very small r, more so for Wq,Wv than for Wq alone.",
          paper_table=tables.one_decimal(pd.DataFrame({"dataset": ["WikiSQL"] * 3 + ["MultiNLI"] * 3, "weight type": ["Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"] * 2,
                      "r=1": [68.8, 73.4, 74.1, 90.7, 91.3, 91.2], "r=2": [69.6, 73.3, 73.7, 90.9, 91.4, 91.7],
                      "r=4": [70.5, 73.7, 74.0, 91.1, 91.3, 91.7], "r=8": [70.4, 73.8, 74.0, 90.7, 91.6, 91.5],
                      "r=64": [70.0, 73.5, 73.9, 90.7, 91.4, 91.4]}).set_index(["dataset", "weight type"]))),
    Entry(name="table7_projections",
          paper="Table 7",
          title="Projections of W0 onto ΔW's subspace",
          kind="table",
          needs=(AMPLIFICATION,),
          draw=lambda f, v: tables.table7(f[AMPLIFICATION], v.layer),
          caption="‖UᵀW0Vᵀ‖_F with U, V the top-r singular vectors of ΔW, of W0 or random; ‖W0‖_F, ‖ΔW‖_F (α/r included) "
                  "and the amplification factor, per r; middle layer, Wq, targets q,v when present, the median over seeds.",
          skip_note="run `lowrank-lab amplify SWEEP` (needs the base model's W0)",
          paper_note="Paper (GPT-3 175B, layer 48, Wq); the same quantities, ΔW's scaling unstated there.",
          paper_table=pd.DataFrame({"GPT-3 L48 Wq": ["‖UᵀW0Vᵀ‖_F, U,V of ΔW", "‖UᵀW0Vᵀ‖_F, U,V of W0", "‖UᵀW0Vᵀ‖_F, random U,V",
                      "‖W0‖_F", "‖ΔW‖_F", "amplification ‖ΔW‖_F/‖UᵀW0Vᵀ‖_F"],
                      "r=4": [0.32, 21.67, 0.02, 61.95, 6.91, 21.5],
                      "r=64": [1.90, 37.71, 0.33, 61.95, 3.57, 1.88]}).set_index("GPT-3 L48 Wq")),
    Entry(name="table18_metric_vs_rank",
          paper="Table 18",
          title="Every dev metric against r",
          kind="table",
          needs=(RESULTS,),
          draw=lambda f, v: tables.one_decimal(tables.metric_vs_rank_table(tables.in_percent(_tuned(f)))),
          caption="Every dev metric (×100 but the loss) against r for one target set (q,v when present), the median "
                  "over seeds; with a learning-rate axis, each r at its best learning rate.",
          skip_note="set sweep.r to several ranks, then rerun `lowrank-lab rank-sweep`",
          paper_note="Paper (GPT-2 medium on E2E NLG): the same metrics against r from 1 to 1,024."),
    Entry(name="table3_nlg",
          paper="Table 3",
          title="E2E NLG: BLEU, NIST, METEOR, ROUGE-L, CIDEr",
          kind="table",
          needs=(RESULTS,),
          draw=lambda f, v: tables.nlg_table(_tuned(f)),
          caption="The E2E NLG challenge's metrics of greedy decoding on the dev meaning representations, against all "
                  "their references, at each cell's best evaluation (by BLEU), median ± half the range over seeds. "
                  + nlg_caption(E2E_METRICS),
          skip_note="train a decoder on data.task = \"e2e\" (its dev metrics are these five), then rerun `lowrank-lab report`",
          paper_note="Paper (GPT-2 medium, LoRA 0.35M parameters): BLEU 70.4, NIST 8.85, METEOR 46.8, ROUGE-L 71.8, "
                     "CIDEr 2.53; the official script's numbers, not comparable digit for digit with these "
                     "implementations."),
    Entry(name="table_storage",
          paper="§4.1 (storage)",
          title="Parameters per adapted matrix",
          kind="table",
          needs=(AMPLIFICATION,),
          draw=lambda f, v: tables.storage_table(f[AMPLIFICATION], f[AMPLIFICATION]["r"].unique()),
          caption="Dense ΔW (d·k) against LoRA's r(d + k) and the reduction 1 − r(d + k)/(dk), per matrix kind and r.",
          skip_note="run `lowrank-lab amplify SWEEP` (it records each matrix's d and k)",
          paper_note="Paper (§4.1): on GPT-3 175B, r = 4 on q,v cuts the checkpoint from 350 GB to 35 MB (10,000×)."),
    Entry(name="table_best_lr",
          paper="LoRA Without Regret (2025), §3",
          title="The best learning rate per rank and method",
          kind="table",
          needs=(RESULTS,),
          draw=lambda f, v: lr_figures.best_lr_table(f[RESULTS]),
          caption="Per method, target set and r: the learning rate whose seed-median main dev metric (best evaluation) "
                  "is highest, and the one whose seed-median dev loss at the last evaluation is lowest, each with the "
                  "range of the per-seed best learning rates; the metric ×100 there; its ratio to full fine-tuning's "
                  "best learning rate (by the metric).",
          skip_note=LR_NOTE,
          paper_note="Schulman et al. 2025: the LoRA / full fine-tuning ratio of best learning rates is about 10."),
)


DYNAMICS_NOTE = ("set train.snapshot_every (e.g. 10) and rerun `lowrank-lab rank-sweep` into a new sweep.name, "
                 "then run `lowrank-lab dynamics SWEEP`")
MEDIAN_CI = "medians over seeds with their percentile bootstrap 95% intervals (n = 1: no interval)"

# After the paper (issue 28): how ΔW forms, how much of its rank the task uses, what intruders cost.
AFTER_PAPER: tuple[Entry, ...] = (
    Entry(name="fig_dynamics", paper="After the paper: training dynamics", title="How ΔW's subspaces form during training",
          kind="figure", needs=(DYNAMICS_PHI, DYNAMICS_SPECTRUM),
          draw=lambda f, v: after_paper.dynamics_figure(f[DYNAMICS_PHI], f[DYNAMICS_SPECTRUM]),
          caption="Against the training step, one line per r (the median over every layer, adapted matrix and "
                  "seed; band: interquartile range): φ(A_t, A_final) over the whole subspaces; φ between each rank "
                  "and the largest at one seed, and between two seeds at one rank, their random baselines (mean of "
                  "200 Haar pairs) dashed; ‖ΔW_t‖_F (α/r included), its stable rank, and the intruders among the "
                  "top 10 singular vectors of W0 + ΔW_t at ε = 0.5; side A (right singular vectors of A).",
          skip_note=DYNAMICS_NOTE,
          paper_note="The paper (§7) analyses finished adapters only; at step 0 every φ must sit at its random "
                     "baseline (independent initial A's)."),
    Entry(name="fig_truncation", paper="After the paper: Eckart–Young truncation", title="Metric of W0 + ΔW_k against k",
          kind="figure", needs=(TRUNCATION,), draw=lambda f, v: after_paper.truncation_figure(f[TRUNCATION]),
          caption="The dev metric of W0 + ΔW_k, ΔW_k the best rank-k approximation of each adapted matrix's ΔW (the "
                  "same k in every matrix; k = 0 is W0 with the cell's trained head), one line per LoRA rank and "
                  "for full fine-tuning (its dense ΔW of every attention and MLP matrix; its other trained weights "
                  "kept), the median over seeds and the band min–max; right: the fraction of Σ‖ΔW‖_F² kept.",
          skip_note="run `lowrank-lab truncate SWEEP`; for the full fine-tuning line add sweep.baselines = [\"full\"]",
          paper_note="Eckart–Young: ΔW_k is the closest rank-k update, with relative error sqrt(1 − energy); "
                     "Biderman et al. 2024: full fine-tuning's ΔW needs 10–100× LoRA's rank for 90% energy."),
    Entry(name="fig_tradeoff", paper="Shuttleworth et al. 2024, Fig. 8", title="Intruder dimensions scaled by λ: task against forgetting",
          kind="figure", needs=(MITIGATION_TRADEOFF,), draw=lambda f, v: after_paper.tradeoff_figure(f[MITIGATION_TRADEOFF]),
          caption="Every intruder direction (top 10 singular vectors, ε = 0.5) of every adapted matrix scaled by λ = 1 "
                  "… 0: the dev metric against forgetting (decoder: next-token loss on general text minus the base's; "
                  "encoder: drift of the pooled sentence vectors from the base's), one line per r, left: intruders of "
                  f"W0 + ΔW (Shuttleworth et al.'s), right: of ΔW alone; {MEDIAN_CI}.",
          skip_note="run `lowrank-lab mitigate SWEEP` (it needs W0 and text the sweep never trained on: --general)",
          paper_note="Shuttleworth et al. 2024: scaling intruder dimensions down lowers forgetting at a small cost "
                     "in task accuracy; more intruders, more forgetting."),
    Entry(name="table_truncation_k", paper="After the paper: smallest rank k", title="Smallest k within 0.5 points",
          kind="table", needs=(TRUNCATION_MEDIANS,), draw=lambda f, v: after_paper.truncation_k_table(f[TRUNCATION_MEDIANS]),
          caption="Per method and rank r: the smallest k (of 0, 1, 2, 4, …) whose truncated ΔW_k keeps the dev metric "
                  f"within 0.5 points of the untruncated one; {MEDIAN_CI}.",
          skip_note="run `lowrank-lab truncate SWEEP`"),
    Entry(name="table_tradeoff", paper="Shuttleworth et al. 2024, trade-off", title="Task metric and forgetting per λ",
          kind="table", needs=(MITIGATION_TRADEOFF, MITIGATION_CORRELATION),
          draw=lambda f, v: after_paper.tradeoff_table(f[MITIGATION_TRADEOFF], f[MITIGATION_CORRELATION]),
          caption="Per intruder definition, r and λ: the median intruder count, metric and forgetting (as in "
                  f"fig_tradeoff), {MEDIAN_CI}; beside each definition Spearman's ρ of intruder count against "
                  "forgetting across cells at λ = 1 with its permutation p-value.",
          skip_note="run `lowrank-lab mitigate SWEEP`"),
)

ENTRIES: tuple[Entry, ...] = FIGURES + TABLES + AFTER_PAPER


def entry(name: str) -> Entry:
    """The entry of that name; KeyError listing the names."""
    for e in ENTRIES:
        if e.name == name:
            return e
    raise KeyError(f"{name!r}: no such figure or table; one of {', '.join(e.name for e in ENTRIES)}")


def needed_tables(entries=ENTRIES) -> list[str]:
    """Every cached table the entries read, each once, in a stable order."""
    return list(dict.fromkeys(t for e in entries for t in e.needs))
