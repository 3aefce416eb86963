"""The analysis commands of a saved sweep: read its runs and W0 once (``SweepInputs``), compute the
tables (``analysis.sweep``), write them with their sidecars (``store.tables``).

``compute_subspace`` / ``compute_amplification`` / ``compute_spectrum`` / ``compute_results`` are
what ``lowrank-lab subspace | amplify | spectrum | tables`` call; ``ensure_tables`` computes the
tables that are missing or stale (what ``report`` needs), handing one ``SweepInputs`` to every
step so that each adapter file and each W0 is read once per command; ``table`` gives one table,
read back when current, else computed and saved first (the notebook API). Every command computes
all its frames before it writes the first file.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from lowrank_lab.analysis import learning_rate as lr
from lowrank_lab.analysis import sweep as sa
from lowrank_lab.analysis import tables as an
from lowrank_lab.analysis.base import W0Source
from lowrank_lab.maths.spectrum import INTRUDER_ITERATIONS, INTRUDER_OVERSAMPLE
from lowrank_lab.store import base_weights, files, layout, runs, tensors
from lowrank_lab.store import tables as st
from lowrank_lab.store.runs import Run


class SweepInputs:
    """What the analyses of one sweep read, each at most once per command: the finished runs
    (every adapter file), W0 of the base model (with its SVDs) and the full fine-tuning weights.
    `base`: a folder or hub id to read W0 from instead of the model the spec names."""

    def __init__(self, sweep: Path, base: str | None = None, csv: bool = False, device: str = "auto"):
        self.sweep, self.base, self.csv, self.device = Path(sweep), base, csv, check_device(device)

    @functools.cached_property
    def runs(self) -> list[Run]:
        found = runs.load_sweep(self.sweep)
        if not found:
            raise files.RunError(f"{self.sweep}: no finished cells to analyse")
        return found

    @functools.cached_property
    def reader(self) -> base_weights.BaseReader:
        model = self.runs[0].spec.model
        if self.base:
            return base_weights.base_reader(str(self.base), None, model.kind, "--base")
        return base_weights.base_reader(model.name, model.revision, model.kind)

    @functools.cached_property
    def W0(self) -> W0Source:
        return W0Source(self.reader.W0, self.reader.name, device=self.device)

    def options(self) -> dict:
        """What every sidecar says of how W0 was read and where the dense work ran."""
        return {"base_model": self.W0.name, "w0_read_from": self.reader.route, "device": str(self.W0.device)}

    @functools.cached_property
    def full(self) -> dict[str, dict]:
        """{cell: dense updates} of the full fine-tuning cells that kept their weights (transported
        sweeps may keep them for one seed only)."""
        return {run.path.name: sa.full_updates(tensors.read_tensors(layout.weights_path(run.path)), self.W0,
                                               self.reader.as_W0)
                for run in self.runs if run.spec.lora.method == "full" and layout.weights_path(run.path).exists()}


def check_device(device: str) -> str:
    """`device` when this machine has it: "auto", "cpu", or "cuda[:N]" with CUDA present; else RunError."""
    import torch

    if device in ("auto", "cpu"):
        return device
    if not device.startswith("cuda") or not device.removeprefix("cuda").lstrip(":").isdigit() and device != "cuda":
        raise files.RunError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise files.RunError(f"--device {device}: this machine has no CUDA device (use auto or cpu)")
    return device


def _inputs(sweep: Path, base: str | None, inputs: SweepInputs | None, csv: bool, device: str) -> SweepInputs:
    return inputs if inputs is not None else SweepInputs(sweep, base, csv, device)


def _write_all(sweep: Path, frames: dict[tuple[str, str | None], pd.DataFrame], options: dict,
               csv: bool = False) -> list[Path]:
    return [st.write_table(sweep, name, frame, {**options, **({"side": side} if side else {})}, an.CONVENTIONS,
                           side, csv=csv)
            for (name, side), frame in frames.items()]


def _check_sides(sides: Iterable[str]) -> tuple[str, ...]:
    sides = tuple(dict.fromkeys(sides))
    bad = [s for s in sides if s not in st.SIDES]
    if bad:
        raise files.RunError(f"side {bad[0]!r}: use one of {', '.join(st.SIDES)}")
    return sides


def compute_subspace(sweep: Path, sides: Iterable[str] = ("A",), base: str | None = None,
                     inputs: SweepInputs | None = None, csv: bool = False, device: str = "auto") -> list[Path]:
    """Write the φ tables (ranks, seeds, random; W0 vs ΔW) of a sweep, one pair per side
    (phi.parquet and phi_w0.parquet for side A, phi_B.parquet and phi_w0_B.parquet for B, …); return their paths."""
    sides, data = _check_sides(sides), _inputs(sweep, base, inputs, csv, device)
    frames = {}
    for side in sides:
        frames[st.PHI, side], frames[st.PHI_W0, side] = sa.phi_tables(data.runs, side, data.W0)
    return _write_all(sweep, frames, {**data.options(), "random_seed": sa.RANDOM_SEED}, data.csv)


def compute_amplification(sweep: Path, base: str | None = None, inputs: SweepInputs | None = None,
                          csv: bool = False, device: str = "auto") -> list[Path]:
    """Write Table 7's quantities for every LoRA cell, layer and matrix."""
    data = _inputs(sweep, base, inputs, csv, device)
    options = {**data.options(), "random_seed": sa.RANDOM_SEED, "delta_w_includes_scaling": True}
    return _write_all(sweep, {(st.AMPLIFICATION, None): sa.amplification_frame(data.runs, data.W0)}, options, data.csv)


def compute_spectrum(sweep: Path, base: str | None = None, inputs: SweepInputs | None = None,
                     csv: bool = False, device: str = "auto") -> list[Path]:
    """Write spectra, spectrum metrics, intruder counts and Eckart–Young curves."""
    data = _inputs(sweep, base, inputs, csv, device)
    frames = sa.spectrum_frames(data.runs, data.W0, data.full)
    lora = sa.lora_runs(data.runs)
    options = {**data.options(), "epsilons": list(an.EPSILONS), "top_k": an.INTRUDER_TOP_K,
               "delta_w_includes_scaling": True,
               "intruders_route": {"method": an.INTRUDER_METHOD, "power_iterations": INTRUDER_ITERATIONS,
                                   "oversample": INTRUDER_OVERSAMPLE, "full_fine_tuning": "dense",
                                   "checked_against_dense": an.intruder_route_check(lora[0].updates, data.W0)
                                   if lora else []}}
    return _write_all(sweep, {(name, None): frame for name, frame in frames.items()}, options, data.csv)


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


def compute_results(sweep: Path, csv: bool = False) -> list[Path]:
    """Write the per-cell results table (the input of every metric table) and the learning curves."""
    frames = {(st.RESULTS, None): results_frame(sweep), (st.LEARNING_CURVES, None): learning_curves_frame(sweep)}
    return _write_all(sweep, frames, {}, csv)


# ---------------------------------------------------------------------------------------------
# Cached: compute what is missing or stale


def _compute(sweep: Path, command: str, sides: tuple[str, ...], base: str | None,
             inputs: SweepInputs | None = None) -> list[Path]:
    if command == "subspace":
        return compute_subspace(sweep, sides, base, inputs)
    if command == "amplify":
        return compute_amplification(sweep, base, inputs)
    if command == "spectrum":
        return compute_spectrum(sweep, base, inputs)
    return compute_results(sweep, csv=inputs is not None and inputs.csv)


def stale(sweep: Path, sides: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
    """{command: sides} of the commands whose tables are missing or out of date (φ: side A, every
    other side already computed, and `sides`)."""
    todo: dict[str, tuple[str, ...]] = {}
    sides = tuple(dict.fromkeys(["A", *st.sides_computed(sweep, st.PHI), *sides]))
    for name in st.TABLES:
        for side in (sides if name in st.SIDED else ("A",)):
            if not st.is_current(sweep, name, side):
                command = st.COMMAND_OF[name]
                todo[command] = tuple(dict.fromkeys([*todo.get(command, ()), side]))
    return todo


def ensure_tables(sweep: Path, base: str | None = None, echo: Callable[[str], None] = print,
                  sides: Iterable[str] = (), csv: bool = False, device: str = "auto") -> list[Path]:
    """Compute every table of the sweep that is missing or stale (and φ for `sides`), reading the
    runs and W0 once for all of them (with `csv`, a CSV copy of each; dense SVDs on `device`);
    return the paths written. Each step says what it computes and how long it took."""
    paths, inputs = [], SweepInputs(sweep, base, csv, device)
    for command, todo in stale(sweep, _check_sides(sides)).items():
        echo(f"{command}: computing {', '.join(st.COMMAND_TABLES[command])} …")
        start = time.perf_counter()
        written = _compute(sweep, command, todo, base, inputs)
        echo(f"wrote {', '.join(p.name for p in written)} ({time.perf_counter() - start:.1f} s)")
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
