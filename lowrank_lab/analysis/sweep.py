"""A saved sweep in, cached tidy tables out: which runs to compare, W0 from the base model, the
spec keys as columns, one CSV per table with a sidecar JSON saying how it was made.

``compute_subspace`` / ``compute_amplification`` / ``compute_spectrum`` / ``compute_results``
are what ``lowrank-lab subspace | amplify | spectrum | tables`` call; ``analyze_sweep`` runs them
all. The maths is in ``analysis`` (per set of updates) and, below it, ``linalg``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
import functools
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from lowrank_lab.analysis import tables as an
from lowrank_lab.store import files
from lowrank_lab.store import runs
from lowrank_lab.model.lora import Conv1D, weight_as_W0
from lowrank_lab.model.base import classify_module, load_base, module_label
from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.store.runs import Run

COMMAND_OF = {an.PHI: "subspace", an.PHI_W0: "subspace", an.AMPLIFICATION: "amplify",
              an.SPECTRUM: "spectrum", an.SPECTRUM_METRICS: "spectrum", an.INTRUDERS: "spectrum",
              an.ECKART_YOUNG: "spectrum", an.RESULTS: "tables"}
RANDOM_SEED = 0  # every random baseline of a table comes from one generator seeded with this
# Classifier keeps the base model as `.encoder`; adapter paths start with it, W0 lives below it.
CLASSIFIER_PREFIX = "encoder."
# Trained weights of full fine-tuning / BitFit cells (see the runs docstring). TODO(owner of
# runs.py): a runs.load_weights(run) would keep this file name in runs alone.
WEIGHTS_FILE = "weights.safetensors"
GROUP_KEYS = ["task", "targets", "scaling_rule", "init"]


def run_columns(run: Run) -> dict:
    """The spec keys of a run as table columns (r = 0 and targets = "" for non-LoRA methods)."""
    lora = run.spec.lora
    is_lora = lora.method == "lora"
    return {"cell": run.path.name, "task": run.summary.get("task", run.spec.data.task),
            "method": lora.method, "targets": lora.targets if is_lora else "",
            "r": lora.r if is_lora else 0, "alpha": lora.alpha, "scaling_rule": lora.scaling_rule,
            "init": lora.init, "seed": run.spec.train.seed}


class BaseWeights:
    """W0 of a sweep's base model, loaded once on first use; ``self(update)`` is a W0 getter."""

    def __init__(self, name: str, revision: str | None = None):
        self.name, self.revision = name, revision
        self._svds: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def encoder(self):
        return _load_encoder(self.name, self.revision)

    def module(self, path: str):
        """The module at `path` of the base model (paths as its own named_modules gives them)."""
        return self.encoder.get_submodule(path)

    def __call__(self, update: LowRankUpdate) -> Tensor:
        return weight_as_W0(self.module(update.path.removeprefix(CLASSIFIER_PREFIX))).detach()

    def svd(self, update: LowRankUpdate) -> tuple[Tensor, Tensor, Tensor]:
        """W0's thin float64 SVD, computed once per matrix for every run and table of the sweep."""
        if update.path not in self._svds:
            self._svds[update.path] = an.w0_svd(self(update))
        return self._svds[update.path]


@functools.lru_cache(maxsize=2)
def _load_encoder(name: str, revision: str | None):
    # One load per process: subspace, amplify and spectrum all need the same W0s.
    return load_base(name, revision)[0]


def base_weights(sweep_runs: list[Run], base_model: str | None = None) -> BaseWeights:
    """The base model named by the runs' spec, or `base_model` (a folder or hub id) instead, e.g.
    when the sweep was trained on another machine."""
    model = sweep_runs[0].spec.model
    return BaseWeights(base_model or model.name, None if base_model else model.revision)


def full_deltas(run: Run, base: BaseWeights) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """({label: ΔW_full = W_ft − W0}, {label: W0}), d×k float64, for every attention matrix a full
    fine-tuning cell saved, in layer order."""
    deltas, w0s = {}, {}
    for key, W in files.read_tensors(run.path / WEIGHTS_FILE).items():
        hit = classify_module(key.removesuffix(".weight")) if key.endswith(".weight") else None
        if hit is None:
            continue
        module = base.module(key.removesuffix(".weight"))
        W_ft = W.mT if Conv1D and isinstance(module, Conv1D) else W
        label = module_label(*hit)
        w0s[label] = weight_as_W0(module).detach().double()
        deltas[label] = W_ft.double() - w0s[label]
    order = sorted(deltas, key=lambda lab: (an.label_columns(lab)["layer"], "qkvo".find(lab[-1])))
    return {lab: deltas[lab] for lab in order}, w0s


def _lora_runs(sweep_runs: Iterable[Run]) -> list[Run]:
    return [r for r in sweep_runs if r.spec.lora.method == "lora" and r.updates]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _write(sweep: Path, name: str, table: pd.DataFrame, options: dict) -> Path:
    """CSV plus a sidecar JSON: the sweep spec, provenance, conventions and options used."""
    path = an.table_path(sweep, name)
    files.write_text(path, table.to_csv(index=False, float_format="%.6g"))
    spec = files.read_json(Path(sweep) / "spec.json")
    files.write_json(path.with_suffix(".json"), {
        "table": name, "rows": len(table), "columns": list(table.columns), "options": options,
        "conventions": an.CONVENTIONS, "sweep": str(sweep), "sweep_spec": spec,
        "provenance": files.provenance()})
    return path


# ---------------------------------------------------------------------------------------------
# The tables


def phi_tables(sweep_runs: list[Run], sides: Iterable[str], base: BaseWeights) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(phi, phi_w0). phi: comparison "ranks" (each r1 < r2 at one seed, Fig. 3/6), "seeds"
    (each seed pair s1 < s2 at one r, Fig. 4/7) and "random" (a Haar pair of each seed
    comparison's shape); phi_w0: every LoRA run against W0 plus a random basis (Fig. 8)."""
    lora = _lora_runs(sweep_runs)
    frames, w0_frames = [], []
    columns = {id(run): run_columns(run) for run in lora}
    by_group: dict[tuple, dict[tuple[int, int], Run]] = {}
    for run in lora:
        c = columns[id(run)]
        by_group.setdefault(tuple(c[k] for k in GROUP_KEYS), {})[(c["seed"], c["r"])] = run
    for side in sides:
        gen = torch.Generator().manual_seed(RANDOM_SEED)  # per side, so each side's random tables repeat
        shapes = set()
        for group, cells in by_group.items():
            keys = dict(zip(GROUP_KEYS, group, strict=True))
            bases: dict[int, Tensor] = {}  # each run's bases serve all its pairs in the group

            def basis_of(u: LowRankUpdate, side: str, bases=bases) -> Tensor:
                if id(u) not in bases:
                    bases[id(u)] = an.basis(u, side)
                return bases[id(u)]

            seeds = sorted({s for s, _ in cells})
            ranks = sorted({r for _, r in cells})
            for seed in seeds:
                for r1, r2 in itertools.combinations([r for r in ranks if (seed, r) in cells], 2):
                    t = an.phi_table(cells[seed, r1].updates, cells[seed, r2].updates, side, basis_of)
                    frames.append(an.lead_columns(t, comparison="ranks", side=side, **keys, seed1=seed, seed2=seed))
            for r in ranks:
                for s1, s2 in itertools.combinations([s for s in seeds if (s, r) in cells], 2):
                    t = an.phi_table(cells[s1, r].updates, cells[s2, r].updates, side, basis_of)
                    frames.append(an.lead_columns(t, comparison="seeds", side=side, **keys, seed1=s1, seed2=s2))
                    shapes |= {(r, d) for d in t["dim"].unique()}
        for r, dim in sorted(shapes):
            t = an.random_phi_table(r, r, int(dim), gen)
            frames.append(an.lead_columns(t, comparison="random", side=side, **dict.fromkeys(GROUP_KEYS, ""),
                                seed1=None, seed2=None))
        for run in lora:
            c = columns[id(run)]
            t = an.phi_w0_table(run.updates, base, side, generator=gen, svd0=base.svd)
            w0_frames.append(an.lead_columns(t, side=side, **{k: c[k] for k in [*GROUP_KEYS, "seed"]}))
    return _concat(frames), _concat(w0_frames)


def amplification_frame(sweep_runs: list[Run], base: BaseWeights) -> pd.DataFrame:
    gen = torch.Generator().manual_seed(RANDOM_SEED)
    return _concat([an.lead_columns(an.amplification_table(run.updates, base, gen, svd0=base.svd).drop(columns="r"), **run_columns(run))
                    for run in _lora_runs(sweep_runs)])


def spectrum_frames(sweep_runs: list[Run], base: BaseWeights) -> dict[str, pd.DataFrame]:
    """spectrum, spectrum_metrics, intruders (LoRA and full fine-tuning) and eckart_young
    (each full fine-tuning cell, with the LoRA cells of the same seed beside it)."""
    out: dict[str, list[pd.DataFrame]] = {an.SPECTRUM: [], an.SPECTRUM_METRICS: [], an.INTRUDERS: [],
                                          an.ECKART_YOUNG: []}
    lora = _lora_runs(sweep_runs)
    for run in lora:
        cols = run_columns(run)
        spectra = an.lowrank_spectra(run.updates)
        out[an.SPECTRUM].append(an.lead_columns(an.spectrum_table(spectra), **cols))
        out[an.SPECTRUM_METRICS].append(an.lead_columns(an.spectrum_metrics_table(spectra), **cols))
        out[an.INTRUDERS].append(an.lead_columns(an.intruder_table(run.updates, base, svd0=base.svd), **cols))
    for run in sweep_runs:
        if run.spec.lora.method != "full" or not (run.path / WEIGHTS_FILE).exists():
            continue  # transported sweeps may keep full fine-tuning's weights for one seed only
        cols = run_columns(run)
        deltas, w0s = full_deltas(run, base)
        spectra = an.dense_spectra(deltas)
        out[an.SPECTRUM].append(an.lead_columns(an.spectrum_table(spectra), **cols))
        out[an.SPECTRUM_METRICS].append(an.lead_columns(an.spectrum_metrics_table(spectra), **cols))
        rows = []
        for label, D in deltas.items():
            rows += an.intruder_rows(label, w0s[label], w0s[label] + D)
        out[an.INTRUDERS].append(an.lead_columns(pd.DataFrame(rows), **cols))
        same_seed = [r for r in lora if r.spec.train.seed == run.spec.train.seed]
        ey = an.eckart_young_table(deltas, {r.path.name: r.updates for r in same_seed})
        meta = pd.DataFrame([{"source": r.path.name, "lora_targets": r.spec.lora.targets} for r in same_seed],
                            columns=["source", "lora_targets"])
        ey = ey.merge(meta, on="source", how="left").fillna({"lora_targets": ""})
        out[an.ECKART_YOUNG].append(an.lead_columns(ey, **{k: cols[k] for k in ("task", "cell", "seed")}))
    return {name: _concat(frames) for name, frames in out.items()}


# ---------------------------------------------------------------------------------------------
# What the commands call


def _load(sweep: Path) -> list[Run]:
    sweep_runs = runs.load_sweep(Path(sweep))
    if not sweep_runs:
        raise files.RunError(f"{sweep}: no finished cells to analyse")
    return sweep_runs


def compute_subspace(sweep: Path, sides: Iterable[str] = ("A",), base_model: str | None = None) -> list[Path]:
    """Write the φ tables (ranks, seeds, random; W0 vs ΔW) of a sweep; return their paths."""
    sides = tuple(sides)
    bad = [s for s in sides if s not in an.SIDES]
    if bad:
        raise files.RunError(f"side {bad[0]!r}: use one of {', '.join(an.SIDES)}")
    sweep_runs = _load(sweep)
    base = base_weights(sweep_runs, base_model)
    phi, phi_w0 = phi_tables(sweep_runs, sides, base)
    options = {"sides": list(sides), "base_model": base.name, "random_seed": RANDOM_SEED}
    return [_write(sweep, an.PHI, phi, options), _write(sweep, an.PHI_W0, phi_w0, options)]


def compute_amplification(sweep: Path, base_model: str | None = None) -> list[Path]:
    """Write Table 7's quantities for every LoRA cell, layer and matrix."""
    sweep_runs = _load(sweep)
    base = base_weights(sweep_runs, base_model)
    options = {"base_model": base.name, "random_seed": RANDOM_SEED, "delta_w_includes_scaling": True}
    return [_write(sweep, an.AMPLIFICATION, amplification_frame(sweep_runs, base), options)]


def compute_spectrum(sweep: Path, base_model: str | None = None) -> list[Path]:
    """Write spectra, spectrum metrics, intruder counts and Eckart–Young curves."""
    sweep_runs = _load(sweep)
    base = base_weights(sweep_runs, base_model)
    options = {"base_model": base.name, "epsilons": list(an.EPSILONS), "top_k": an.INTRUDER_TOP_K,
               "delta_w_includes_scaling": True}
    return [_write(sweep, name, frame, options) for name, frame in spectrum_frames(sweep_runs, base).items()]


def compute_results(sweep: Path) -> list[Path]:
    """Write the per-cell results table (the input of every metric table)."""
    return [_write(sweep, an.RESULTS, an.results_table(Path(sweep)), {})]


def analyze_sweep(sweep: Path, sides: Iterable[str] = ("A",), base_model: str | None = None,
                  echo: Callable[[str], None] = print) -> list[Path]:
    """Every cached table of a sweep (what ``lowrank-lab report`` needs)."""
    paths = compute_results(sweep)
    for step in (lambda: compute_subspace(sweep, sides, base_model),
                 lambda: compute_amplification(sweep, base_model),
                 lambda: compute_spectrum(sweep, base_model)):
        written = step()
        paths += written
        echo(f"wrote {', '.join(p.name for p in written)} …")
    return paths
