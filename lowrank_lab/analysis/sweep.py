"""A sweep's runs in, tidy tables out: which runs to compare, the spec keys as columns. The maths is
in ``analysis.tables`` (per set of updates) and, below it, ``linalg``; W0 comes in as a
``analysis.base.W0Source`` the workflow builds, and ``workflow.sweep`` reads the runs once and
writes the tables. Nothing here opens a file or loads a model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import torch
from torch import Tensor

from lowrank_lab.analysis import tables as an
from lowrank_lab.analysis.base import W0Source
from lowrank_lab.maths.update import DenseUpdate
from lowrank_lab.model.base import classify_module, kind_order, module_label, parse_label
from lowrank_lab.store import tables as st
from lowrank_lab.store.runs import Run

RANDOM_SEED = 0  # every random baseline of a table comes from one generator seeded with this
GROUP_KEYS = ["task", "targets", "scaling_rule", "init"]


def run_columns(run: Run) -> dict:
    """The spec keys of a run as table columns (r = 0 and targets = "" for non-LoRA methods)."""
    lora = run.spec.lora
    is_lora = lora.method == "lora"
    return {"cell": run.path.name, "task": run.summary.task or run.spec.data.task,
            "method": lora.method, "targets": lora.targets if is_lora else "",
            "r": lora.r if is_lora else 0, "alpha": lora.alpha, "scaling_rule": lora.scaling_rule,
            "init": lora.init, "seed": run.spec.train.seed}


def full_updates(weights: Mapping[str, Tensor], base: W0Source, as_W0: Callable[[str, Tensor], Tensor]
                 ) -> dict[str, DenseUpdate]:
    """{label: ΔW_full = W_ft − W0} as dense float64 updates (r = min(d, k)) for every attention
    and MLP matrix among the trained `weights` of a full fine-tuning cell, in layer order;
    `as_W0(path, W)` puts a trained weight in W0's d×k layout (GPT-2's Conv1D stores k×d)."""
    found = {}
    for key, W in weights.items():
        hit = classify_module(key.removesuffix(".weight"), mlp=True) if key.endswith(".weight") else None
        if hit is None:
            continue
        path, label = key.removesuffix(".weight"), module_label(*hit)
        W0 = base.weight(path).detach().double()
        D = as_W0(path, W).double() - W0
        found[label] = DenseUpdate(label, path, D, min(D.shape), kind="full")
    order = sorted(found, key=lambda lab: (an.label_columns(lab)["layer"], kind_order(parse_label(lab)[1])))
    return {lab: found[lab] for lab in order}


def lora_runs(sweep_runs: Iterable[Run]) -> list[Run]:
    return [r for r in sweep_runs if r.spec.lora.method == "lora" and r.updates]


def map_runs(fn: Callable[[Run], pd.DataFrame], runs: Sequence[Run], base: W0Source) -> list[pd.DataFrame]:
    """[fn(run) for run in runs], the runs side by side in threads, each on one core: a decoder's
    cells need thousands of dense SVDs (intruders), and torch releases the GIL inside them. W0 and
    its SVDs are loaded first, so that the threads share them; results keep the runs' order."""
    workers = min(len(runs), torch.get_num_threads())
    if workers <= 1:
        return [fn(run) for run in runs]
    for u in runs[0].updates.values():
        base.svd(u)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(fn, runs))
    finally:
        torch.set_num_threads(threads)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# φ (Sec. 7.2: Fig. 3, 4, 6, 7; App. H.3: Fig. 8)


def _groups(lora: list[Run]) -> dict[tuple, dict[tuple[int, int], Run]]:
    """{(task, targets, scaling_rule, init): {(seed, r): run}}: the runs that φ compares."""
    by_group: dict[tuple, dict[tuple[int, int], Run]] = {}
    for run in lora:
        c = run_columns(run)
        by_group.setdefault(tuple(c[k] for k in GROUP_KEYS), {})[(c["seed"], c["r"])] = run
    return by_group


def figure_rank(ranks: Sequence[int]) -> int:
    """The smaller rank of the pair Figs. 3 and 6 draw against the largest: 8 when the sweep has it
    (the paper's 8 against 64), else the largest below the largest (``present.plotting.rank_pair``)."""
    smaller = sorted(r for r in ranks if r < max(ranks))
    return 8 if 8 in smaller else smaller[-1]


def figure_w0_ranks(ranks: Sequence[int]) -> set[int]:
    """The ranks Fig. 8 draws against W0: 4, 8 and 64 when all present, else the three largest."""
    ranks = sorted(set(ranks))
    return {4, 8, 64} if {4, 8, 64} <= set(ranks) else set(ranks[-3:])


def _group_phi(cells: dict[tuple[int, int], Run], keys: dict, side: str) -> tuple[list[pd.DataFrame], set]:
    """"ranks" (each r1 < r2 at one seed) and "seeds" (each s1 < s2 at one r) frames of one group,
    and the (r, dim) shapes of its seed comparisons (for their random counterparts). The pairs the
    figures draw keep their complete grids, every other pair its diagonal (``CONVENTIONS``)."""
    frames, shapes = [], set()
    seeds, ranks = sorted({s for s, _ in cells}), sorted({r for _, r in cells})
    for seed in seeds:
        at_seed = [r for r in ranks if (seed, r) in cells]
        for r1, r2 in itertools.combinations(at_seed, 2):
            shown = r2 == max(at_seed) and r1 == figure_rank(at_seed)
            t = an.phi_table(cells[seed, r1].updates, cells[seed, r2].updates, side, diagonal=not shown)
            frames.append(an.lead_columns(t, comparison="ranks", side=side, **keys, seed1=seed, seed2=seed))
    for r in ranks:
        for s1, s2 in itertools.combinations([s for s in seeds if (s, r) in cells], 2):
            t = an.phi_table(cells[s1, r].updates, cells[s2, r].updates, side, diagonal=r != max(ranks))
            frames.append(an.lead_columns(t, comparison="seeds", side=side, **keys, seed1=s1, seed2=s2))
            shapes |= {(r, int(d)) for d in t["dim"].unique()}
    return frames, shapes


def phi_tables(sweep_runs: list[Run], side: str, base: W0Source) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(phi, phi_w0) of one `side`. phi: comparison "ranks" (Fig. 3/6), "seeds" (Fig. 4/7) and
    "random" (a Haar pair of each seed comparison's shape); phi_w0: every LoRA run against W0 plus
    a random basis (Fig. 8). The random baselines come from one generator seeded per side. Complete
    grids for the pairs and ranks the figures draw, diagonals for the rest (``figure_rank``)."""
    lora = lora_runs(sweep_runs)
    gen = torch.Generator().manual_seed(RANDOM_SEED)
    frames, shapes = [], set()
    for group, cells in _groups(lora).items():
        found, found_shapes = _group_phi(cells, dict(zip(GROUP_KEYS, group, strict=True)), side)
        frames += found
        shapes |= found_shapes
    for r, dim in sorted(shapes):
        t = an.random_phi_table(r, r, dim, gen)
        frames.append(an.lead_columns(t, comparison="random", side=side, **dict.fromkeys(GROUP_KEYS, ""),
                                      seed1=None, seed2=None))
    w0_frames, shown = [], figure_w0_ranks([run_columns(run)["r"] for run in lora] or [0])
    for run in lora:
        c = run_columns(run)
        t = an.phi_w0_table(run.updates, base, side, generator=gen, diagonal=c["r"] not in shown)
        w0_frames.append(an.lead_columns(t, side=side, **{k: c[k] for k in [*GROUP_KEYS, "seed"]}))
    return _concat(frames), _concat(w0_frames)


# ---------------------------------------------------------------------------------------------
# ΔW against W0 (Table 7) and spectra


def amplification_frame(sweep_runs: list[Run], base: W0Source) -> pd.DataFrame:
    """Table 7's rows of every LoRA run; run i's random baseline from a generator seeded
    RANDOM_SEED + i, so that the table does not depend on the order the threads finish in."""
    lora = lora_runs(sweep_runs)
    seeds = {run.path.name: RANDOM_SEED + i for i, run in enumerate(lora)}

    def one(run: Run) -> pd.DataFrame:
        gen = torch.Generator().manual_seed(seeds[run.path.name])
        table = an.amplification_table(run.updates, base, gen).drop(columns="r")
        return an.lead_columns(table, **run_columns(run))

    return _concat(map_runs(one, lora, base))


def _full_frames(run: Run, full: Mapping[str, DenseUpdate], lora: list[Run], base: W0Source) -> dict[str, pd.DataFrame]:
    """Spectrum, metrics, intruders and Eckart–Young of one full fine-tuning cell (its dense
    updates `full`); the LoRA cells of the same seed beside its Eckart–Young curve."""
    cols = run_columns(run)
    spectra = an.spectra(full)
    same_seed = [r for r in lora if r.spec.train.seed == run.spec.train.seed]
    ey = an.eckart_young_table(full, {r.path.name: r.updates for r in same_seed})
    meta = pd.DataFrame([{"source": r.path.name, "lora_targets": r.spec.lora.targets} for r in same_seed],
                        columns=["source", "lora_targets"])
    ey = ey.merge(meta, on="source", how="left").fillna({"lora_targets": ""})
    return {st.SPECTRUM: an.lead_columns(an.spectrum_table(spectra), **cols),
            st.SPECTRUM_METRICS: an.lead_columns(an.spectrum_metrics_table(spectra), **cols),
            st.INTRUDERS: an.lead_columns(an.intruder_table(full, base, method="dense"), **cols),
            st.ECKART_YOUNG: an.lead_columns(ey, **{k: cols[k] for k in ("task", "cell", "seed")})}


def spectrum_frames(sweep_runs: list[Run], base: W0Source,
                    full: Mapping[str, Mapping[str, DenseUpdate]]) -> dict[str, pd.DataFrame]:
    """spectrum, spectrum_metrics, intruders (LoRA and full fine-tuning) and eckart_young (each
    full fine-tuning cell, with the LoRA cells of the same seed beside it). `full`: the dense
    updates (``full_updates``) of the full fine-tuning cells that kept their weights, by cell name."""
    out: dict[str, list[pd.DataFrame]] = {st.SPECTRUM: [], st.SPECTRUM_METRICS: [], st.INTRUDERS: [],
                                          st.ECKART_YOUNG: []}
    lora = lora_runs(sweep_runs)
    for run in lora:
        cols = run_columns(run)
        spectra = an.spectra(run.updates)
        out[st.SPECTRUM].append(an.lead_columns(an.spectrum_table(spectra), **cols))
        out[st.SPECTRUM_METRICS].append(an.lead_columns(an.spectrum_metrics_table(spectra), **cols))
    out[st.INTRUDERS] += map_runs(lambda run: an.lead_columns(an.intruder_table(run.updates, base),
                                                              **run_columns(run)), lora, base)
    for run in sweep_runs:
        if run.spec.lora.method == "full" and run.path.name in full:
            for name, frame in _full_frames(run, full[run.path.name], lora, base).items():
                out[name].append(frame)
    return {name: _concat(frames) for name, frames in out.items()}
