"""The numbers figures/RESULTS.md quotes for the study after the paper (issue 28: dynamics,
truncation, intruders and forgetting), computed from the committed tables of
figures/results/after-paper-cpu/data/*.parquet (figures/export_results.py), with the verdicts they
support worded from those numbers.

    python figures/after_paper_results.py            # print the block
    python figures/after_paper_results.py --check    # exit 1 unless RESULTS.md's block equals it
    python figures/after_paper_results.py --write    # put it into RESULTS.md's block

The block sits between the two marker lines below in figures/RESULTS.md; nothing around it quotes a
number. figures/check_results.py checks and writes it with the rest of the document (its typed-number
check skips the block, which this script renders). Medians over seeds come with their percentile bootstrap 95% interval (lowrank_lab.maths.stats,
2000 resamples, seeded); "X above Y" claims across cells with a paired two-sided sign test.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lowrank_lab.workflow import stats
from lowrank_lab.store import tables as st

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "after-paper-cpu" / "data"
BEGIN, END = "<!-- after_paper_results.py: begin -->", "<!-- after_paper_results.py: end -->"


def read(name: str, folder: Path = RESULTS) -> pd.DataFrame:
    return st.typed(pd.read_parquet(folder / f"{name}.parquet"))


def ci(values, digits: int = 2) -> str:
    """'median [lo, hi] (n)' of `values` over seeds, or 'value (n = 1)'."""
    b = stats.bootstrap_median(np.asarray(values, dtype=float))
    if b["n"] < 2:
        return f"{b['median']:.{digits}f} (n = 1)"
    return f"{b['median']:.{digits}f} [{b['lo']:.{digits}f}, {b['hi']:.{digits}f}] (n = {b['n']})"


def sign_test(x, y) -> dict:
    return stats.sign_test(np.asarray(x, dtype=float), np.asarray(y, dtype=float))


def paired(x, y) -> str:
    """'x > y in W of N pairs, sign test p = …' of paired values."""
    t = sign_test(x, y)
    return f"greater in {t['wins']} of {t['n']} pairs, sign test p = {t['p_value']:.2g}"


def verdict(p_value: float, direction_ok: bool) -> str:
    """What a paired test allows: "supported" only when the direction is right and p < 0.05."""
    if direction_ok and p_value < 0.05:
        return "supported here"
    return "in that direction here, but not significant" if direction_ok else "not seen here"


def sidecar(name: str, folder: Path) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def dynamics(phi: pd.DataFrame, spec: pd.DataFrame) -> list[str]:
    lines = ["**Dynamics** (`lowrank-lab dynamics`, φ on side A; medians over layers and matrices, then over seeds; "
             "the sign tests pair each layer × matrix × seed with its random baseline):"]
    start = phi[(phi.step == 0) & phi.comparison.isin(["ranks", "seeds"])]
    z = ((start.phi - start.phi_random) / start.phi_random_sd).abs()
    lines.append(f"- At step 0, φ between ranks and between seeds (whole subspaces) lies within {z.max():.2f} standard "
                 f"deviations of its random baseline (the mean of {int(start.n_random.min())} Haar pairs) in all "
                 f"{len(start)} comparisons, in each of the {start.layer.nunique()} layers: the initial A's are independent.")
    final = phi[phi.comparison == "final"]
    last = int(phi.step.max())
    for r, g in final.groupby("r1"):
        per_seed = g.groupby(["seed1", "step"]).phi.median().unstack(0)
        settled = per_seed.median(axis=1)
        first = sorted(x for x in per_seed.index if x > 0)[0]
        reach = settled[settled >= 0.9].index.min()
        lines.append(f"- r = {r}: φ(A_t, A_final) is {ci(per_seed.loc[first])} at step {first} of {last}; its median "
                     f"over seeds first reaches 0.9 at step {reach}.")
    every = phi[phi.comparison == "ranks"]
    ranks, top = every[every.step == last], int(every.r2.max())
    early = sorted(x for x in every.step.unique() if x > 0)[0]
    for r, g in ranks[ranks.r2 == top].groupby("r1"):
        per_seed = g.groupby("seed1")[["phi", "phi_random", "phi_top", "phi_top_random"]].median()
        e = every[(every.step == early) & (every.r1 == r) & (every.r2 == top)]
        lines.append(f"- r = {r} against r = {top}: the top direction's φ(1, 1) is {ci(e.groupby('seed1').phi_top.median(), 3)} "
                     f"at step {early} ({paired(e.phi_top, e.phi_top_random)} over the random)."
                     f" At the last step φ = {ci(per_seed.phi, 3)} against the random "
                     f"{per_seed.phi_random.median():.3f} ({paired(g.phi, g.phi_random)}); "
                     f"the top direction's φ(1, 1) = {ci(per_seed.phi_top, 3)} against the random "
                     f"{per_seed.phi_top_random.median():.4f} ({paired(g.phi_top, g.phi_top_random)}).")
    end = spec[spec.step == last].groupby(["r", "seed"])[["frobenius", "stable_rank", "n_intruders"]].median().reset_index()
    for r, g in end.groupby("r"):
        lines.append(f"- r = {r} at the last step: ‖ΔW‖_F {ci(g.frobenius, 3)}, stable rank {ci(g.stable_rank)}, "
                     f"intruders of W0 + ΔW per matrix {ci(g.n_intruders, 1)}.")
    return lines


def truncation(trunc: pd.DataFrame, k: pd.DataFrame) -> list[str]:
    lines = ["", "**Truncation** (`lowrank-lab truncate`; the same k in every matrix of a cell; medians over seeds):"]
    k90 = trunc[trunc.k_rule == "rank_90"].set_index("cell")
    k = k.set_index("cell")
    for (method, r), g in sorted(k.groupby(["method", "r"]), key=lambda x: (x[0][0] != "lora", x[0][1])):
        kk = k90.loc[g.index]
        label = f"LoRA r = {r}" if method == "lora" else "full fine-tuning"
        lines.append(f"- {label}: the smallest k within 0.5 points of the untruncated metric is {ci(g.k_min, 0)}, "
                     f"keeping {ci(g.energy_at_k_min)} of the energy; each matrix at its own rank_90 (median k "
                     f"{ci(kk.k, 0)}) changes the metric by {ci(kk.change)} points.")
    lora = k[k.method == "lora"]
    below = sign_test(lora.k_max, lora.k_min)
    lines.append(f"- Eckart–Young keeps the closest rank-k update, not the metric. Across the {len(lora)} LoRA cells the "
                 f"metric survives truncation to k_min < r in {below['wins']} ({paired(lora.k_max, lora.k_min)} for "
                 f"r over k_min), keeping a median energy fraction of {lora.energy_at_k_min.median():.2f}: "
                 f"that the task uses fewer directions than r is {verdict(below['p_value'], below['wins'] > below['losses'])}.")
    full, top = k90[k90.method == "full"], k90[(k90.method == "lora") & (k90.r == k90.r.max())]
    if len(full) and len(top):
        ratio = full.k.median() / max(top.k.median(), 1)
        lines.append(f"- rank_90 (median over matrices) of full fine-tuning's ΔW is {ci(full.k, 0)} against "
                     f"{ci(top.k, 0)} for LoRA r = {int(top.r.max())}: {ratio:.1f}× (Biderman et al. 2024: 10–100× "
                     f"at their scale; {'within' if 10 <= ratio <= 100 else 'outside'} that range here).")
    return lines


def mitigation(mit: pd.DataFrame, corr: pd.DataFrame, general: str) -> list[str]:
    lines = ["", f"**Intruders and forgetting** (`lowrank-lab mitigate`; forgetting: the drift ‖e − e_base‖/‖e_base‖ of "
             f"the pooled sentence vectors on {general}; medians over the cells of every rank and seed):"]
    for definition, g in mit.groupby("definition"):
        one, zero = (g[g.lam == lam].set_index("cell").sort_index() for lam in (1.0, 0.0))
        dv, df = (zero.value - one.value) * 100, zero.forgetting - one.forgetting
        less = sign_test(one.forgetting, zero.forgetting)
        c = corr.set_index("definition").loc[definition]
        name = "W0 + ΔW (Shuttleworth et al.'s)" if definition == "W0+dW" else "ΔW alone"
        lines.append(f"- Intruders of {name}: {ci(one.n_intruders, 0)} per cell. Removing them (λ = 0 against λ = 1) "
                     f"changes the metric by {ci(dv)} points and forgetting by {ci(df, 4)} (λ = 1 {paired(one.forgetting, zero.forgetting)}); "
                     f"Spearman's ρ of intruders against forgetting across cells is {c.rho:.2f} (p = {c.p_value:.2g}, "
                     f"n = {int(c.n)}). Shuttleworth et al.'s \"scaling intruders down lowers forgetting\" is "
                     f"{verdict(less['p_value'], less['wins'] > less['losses'])}; \"more intruders, more forgetting\" is "
                     f"{verdict(c.p_value, c.rho > 0)}.")
    return lines


def setup(folder: Path) -> list[str]:
    """The run, from the resolved spec in a table's sidecar."""
    meta = sidecar(st.DYNAMICS_PHI, folder)
    spec = meta["sweep_spec"]
    sweep, train, data = spec["sweep"], spec["train"], spec["data"]
    metric = read(st.RESULTS, folder).metric.iloc[0]
    general = sidecar(st.MITIGATION, folder)["options"] if (folder / f"{st.MITIGATION}.json").exists() else None
    forgetting = (f"forgetting on {general['general_sentences']} sentences of {general['general']}"
                  + (f" for the cells of r = {', '.join(map(str, general['ranks']))}" if general.get("ranks") else "")
                  + f" at λ = {', '.join(f'{x:g}' for x in general['lambdas'])}; ") if general else ""
    model = "the embedded all-MiniLM-L6-v2" if spec["model"]["name"] == "embedded" else spec["model"]["name"]
    length = f"{train['max_steps']} steps" if train.get("max_steps") else f"{train['epochs']} epoch(s)"
    return [f"Setup (from the sidecars): {model} on {data['task']} ({data['max_train']} training examples, {length} "
            f"of batches of {train['batch_size']}, dev metric {metric} on {data['max_eval']} held-out examples); LoRA on "
            f"{', '.join(sweep['targets'])} at r = {', '.join(map(str, sweep['r']))} × seeds "
            f"{', '.join(map(str, sweep['seeds']))}, α = {sweep['alpha'][0]:g}, learning rate {sweep['lr'][0]:g}; "
            f"{' and '.join(sweep['baselines'])} fine-tuning at {sweep['full_lr'][0]:g}; snapshots every "
            f"{train['snapshot_every']} steps; {forgetting}cells trained: {len(read(st.RESULTS, folder))}; on the CPU.", ""]


def block(folder: Path = RESULTS) -> str:
    rule = ("Verdicts: \"supported here\" when the paired two-sided sign test across cells (or the permutation "
            "test of Spearman's ρ) gives p < 0.05 in the stated direction; \"in that direction here, but not "
            "significant\" when p ≥ 0.05; \"not seen here\" when the direction is the other. Intervals: "
            f"percentile bootstrap 95% over seeds ({stats.N_BOOT} resamples), or over cells where a line pools ranks.")
    lines = [rule, ""] + setup(folder) + dynamics(read(st.DYNAMICS_PHI, folder), read(st.DYNAMICS_SPECTRUM, folder))
    if (folder / f"{st.TRUNCATION}.parquet").exists():
        lines += truncation(read(st.TRUNCATION, folder), read(st.TRUNCATION_K, folder))
    else:
        lines += ["", "**Truncation**: not in the committed results (`lowrank-lab truncate` was not run on this sweep)."]
    if (folder / f"{st.MITIGATION}.parquet").exists():
        general = sidecar(st.MITIGATION, folder)["options"]["general"]
        lines += mitigation(read(st.MITIGATION, folder), read(st.MITIGATION_CORRELATION, folder), general)
    else:
        lines += ["", "**Intruders and forgetting**: not in the committed results (`lowrank-lab mitigate` was not run "
                  "on this sweep)."]
    return "\n".join([BEGIN, *lines, END])


def _current(doc: str) -> str:
    return doc[doc.index(BEGIN):doc.index(END) + len(END)] if BEGIN in doc and END in doc else ""


def holds(doc: str) -> bool:
    """Whether the document `doc` holds the block as computed from the committed tables."""
    return _current(doc) == block()


def rendered(doc: str) -> str:
    """`doc` with its block written from the committed tables."""
    if not _current(doc):
        raise ValueError(f"no '{BEGIN}' … '{END}' block in the document")
    return doc.replace(_current(doc), block())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    path = ROOT / "RESULTS.md"
    doc = path.read_text()
    if not _current(doc):
        sys.exit(f"{path}: no '{BEGIN}' … '{END}' block")
    if args.write:
        path.write_text(rendered(doc))
    elif args.check:
        sys.exit(0 if holds(doc) else f"{path}: the after-paper block is stale; run {Path(__file__).name} --write")
    else:
        print(block())


if __name__ == "__main__":
    main()
