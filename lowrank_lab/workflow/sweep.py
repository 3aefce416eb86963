"""The analysis commands of a saved sweep: read its runs (``store.runs``), compute the tables
(``analysis.sweep``), write them with their sidecars (``store.tables``).

``compute_subspace`` / ``compute_amplification`` / ``compute_spectrum`` / ``compute_results`` are
what ``lowrank-lab subspace | amplify | spectrum | tables`` call; ``analyze_sweep`` runs them all;
``ensure_tables`` only those whose tables are missing or stale (what ``report`` needs), and
``table`` one table, read back when current, else computed and saved first (the notebook API).
Every command computes all its frames before it writes the first file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from lowrank_lab.analysis import learning_rate as lr
from lowrank_lab.analysis import sweep as sa
from lowrank_lab.analysis import tables as an
from lowrank_lab.store import files, layout, runs, tensors
from lowrank_lab.store import tables as st
from lowrank_lab.store.runs import Run


def _load(sweep: Path) -> list[Run]:
    sweep_runs = runs.load_sweep(Path(sweep))
    if not sweep_runs:
        raise files.RunError(f"{sweep}: no finished cells to analyse")
    return sweep_runs


def _write_all(sweep: Path, frames: dict[tuple[str, str | None], pd.DataFrame], options: dict) -> list[Path]:
    return [st.write_table(sweep, name, frame, {**options, **({"side": side} if side else {})}, an.CONVENTIONS, side)
            for (name, side), frame in frames.items()]


def _check_sides(sides: Iterable[str]) -> tuple[str, ...]:
    sides = tuple(dict.fromkeys(sides))
    bad = [s for s in sides if s not in st.SIDES]
    if bad:
        raise files.RunError(f"side {bad[0]!r}: use one of {', '.join(st.SIDES)}")
    return sides


def compute_subspace(sweep: Path, sides: Iterable[str] = ("A",), base: str | None = None) -> list[Path]:
    """Write the φ tables (ranks, seeds, random; W0 vs ΔW) of a sweep, one pair per side
    (phi.csv and phi_w0.csv for side A, phi_B.csv and phi_w0_B.csv for B, …); return their paths."""
    sides = _check_sides(sides)
    sweep_runs = _load(sweep)
    W0 = sa.base_weights(sweep_runs, base)
    frames = {}
    for side in sides:
        frames[st.PHI, side], frames[st.PHI_W0, side] = sa.phi_tables(sweep_runs, side, W0)
    return _write_all(sweep, frames, {"base_model": W0.name, "random_seed": sa.RANDOM_SEED})


def compute_amplification(sweep: Path, base: str | None = None) -> list[Path]:
    """Write Table 7's quantities for every LoRA cell, layer and matrix."""
    sweep_runs = _load(sweep)
    W0 = sa.base_weights(sweep_runs, base)
    options = {"base_model": W0.name, "random_seed": sa.RANDOM_SEED, "delta_w_includes_scaling": True}
    return _write_all(sweep, {(st.AMPLIFICATION, None): sa.amplification_frame(sweep_runs, W0)}, options)


def full_weights(sweep_runs: list[Run]) -> dict[str, dict]:
    """{cell: trained weights} of the full fine-tuning cells that kept them (transported sweeps may
    keep them for one seed only)."""
    return {run.path.name: tensors.read_tensors(layout.weights_path(run.path)) for run in sweep_runs
            if run.spec.lora.method == "full" and layout.weights_path(run.path).exists()}


def compute_spectrum(sweep: Path, base: str | None = None) -> list[Path]:
    """Write spectra, spectrum metrics, intruder counts and Eckart–Young curves."""
    sweep_runs = _load(sweep)
    W0 = sa.base_weights(sweep_runs, base)
    frames = sa.spectrum_frames(sweep_runs, W0, full_weights(sweep_runs))
    options = {"base_model": W0.name, "epsilons": list(an.EPSILONS), "top_k": an.INTRUDER_TOP_K,
               "delta_w_includes_scaling": True}
    return _write_all(sweep, {(name, None): frame for name, frame in frames.items()}, options)


def _done_cells(sweep: Path, read: Callable) -> list[tuple]:
    """(name, CellSpec, read(cell folder)) of every finished cell, in manifest order."""
    sweep = Path(sweep)
    return [(name, layout.read_cell_config(folder), read(folder))
            for name in st.done_cells(sweep) for folder in [layout.cell_dir(sweep, name)]]


def results_frame(sweep: Path) -> pd.DataFrame:
    """One row per finished cell (``analysis.tables.results_table``), read from the cells' records."""
    return an.results_table(_done_cells(sweep, layout.read_summary))


def learning_curves_frame(sweep: Path) -> pd.DataFrame:
    """The training loss against step of every finished cell (``analysis.learning_rate``)."""
    return lr.learning_curves_table(_done_cells(sweep, layout.read_metrics))


def compute_results(sweep: Path) -> list[Path]:
    """Write the per-cell results table (the input of every metric table) and the learning curves."""
    frames = {(st.RESULTS, None): results_frame(sweep), (st.LEARNING_CURVES, None): learning_curves_frame(sweep)}
    return _write_all(sweep, frames, {})


def analyze_sweep(sweep: Path, sides: Iterable[str] = ("A",), base: str | None = None,
                  echo: Callable[[str], None] = print) -> list[Path]:
    """Every cached table of a sweep (what ``lowrank-lab report`` needs)."""
    sides = _check_sides(sides)
    paths = compute_results(sweep)
    for step in (lambda: compute_subspace(sweep, sides, base), lambda: compute_amplification(sweep, base),
                 lambda: compute_spectrum(sweep, base)):
        written = step()
        paths += written
        echo(f"wrote {', '.join(p.name for p in written)} …")
    return paths


# ---------------------------------------------------------------------------------------------
# Cached: compute what is missing or stale


def _compute(sweep: Path, command: str, sides: tuple[str, ...], base: str | None) -> list[Path]:
    if command == "subspace":
        return compute_subspace(sweep, sides, base)
    if command == "amplify":
        return compute_amplification(sweep, base)
    if command == "spectrum":
        return compute_spectrum(sweep, base)
    return compute_results(sweep)


def stale(sweep: Path) -> dict[str, tuple[str, ...]]:
    """{command: sides} of the commands whose tables are missing or out of date (φ: side A and
    every other side already computed)."""
    todo: dict[str, tuple[str, ...]] = {}
    sides = tuple(dict.fromkeys(["A", *st.sides_computed(sweep, st.PHI)]))
    for name in st.TABLES:
        for side in (sides if name in st.SIDED else ("A",)):
            if not st.is_current(sweep, name, side):
                command = st.COMMAND_OF[name]
                todo[command] = tuple(dict.fromkeys([*todo.get(command, ()), side]))
    return todo


def ensure_tables(sweep: Path, base: str | None = None, echo: Callable[[str], None] = print) -> list[Path]:
    """Compute every table of the sweep that is missing or stale; return the paths written."""
    paths = []
    for command, sides in stale(sweep).items():
        written = _compute(sweep, command, sides, base)
        echo(f"wrote {', '.join(p.name for p in written)} …")
        paths += written
    return paths


def table(sweep: Path, name: str, side: str = "A", base: str | None = None) -> pd.DataFrame:
    """Table `name` (of `side` for φ tables): the saved one when current, else computed and saved
    first, the way the CLI caches it. A table with no rows is an empty DataFrame."""
    if name not in st.TABLES:
        raise files.RunError(f"table {name!r}: use one of {', '.join(st.TABLES)}")
    _check_sides([side])
    if not st.is_current(sweep, name, side):
        _compute(sweep, st.COMMAND_OF[name], (side,), base)
    try:
        return st.read_table(sweep, name, side)
    except st.EmptyTable:
        return pd.DataFrame()
