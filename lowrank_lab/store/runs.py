"""The only place that knows paths and file formats: sweep and cell directories, PEFT adapter
files, checkpoints, manifests, provenance; every write is atomic.

A sweep directory::

    <out_dir>/<sweep name>/
        spec.json                  the resolved ExperimentSpec
        manifest.json              one entry per cell: status, best metric, failure message
        cells/<cell name>/
            config.json            the resolved CellSpec
            adapter/               PEFT format: adapter_config.json + adapter_model.safetensors
            weights.safetensors    trained weights for full fine-tuning / BitFit (no adapter)
            metrics.jsonl          one line per evaluation
            summary.json           best evaluation, trainable parameters, examples/s, provenance
            checkpoint/            state to resume an interrupted cell (removed when it finishes)
        analysis/                  tidy tables computed from the cells (CSV), figures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.spec import CellSpec, ExperimentSpec, cell_from_dict, spec_to_dict
from lowrank_lab.store.files import RunError, read_json, read_jsonl, read_tensors, write_json, write_tensors
from lowrank_lab.store.peft_format import ADAPTER_CONFIG, read_adapter

# ---------------------------------------------------------------------------------------------
# Paths


def sweep_dir(spec: ExperimentSpec) -> Path:
    return Path(spec.sweep.out_dir) / spec.sweep.name


def cell_dir(sweep: Path, cell: CellSpec) -> Path:
    return sweep / "cells" / cell.name


def analysis_dir(sweep: Path) -> Path:
    return sweep / "analysis"


# ---------------------------------------------------------------------------------------------
# Cells of a sweep


@dataclass(frozen=True)
class Run:
    """A finished cell, as saved: its spec, its evaluations and its low-rank updates by label."""

    path: Path
    spec: CellSpec
    metrics: list[dict]
    summary: dict
    updates: dict[str, LowRankUpdate]


def load_run(path: Path) -> Run:
    path = Path(path)
    spec = cell_from_dict(read_json(path / "config.json"))
    updates = {}
    if (path / "adapter" / ADAPTER_CONFIG).exists():
        _, by_path, _ = read_adapter(path / "adapter")
        updates = {u.label: u for u in by_path.values()}
    return Run(path, spec, read_jsonl(path / "metrics.jsonl"), read_json(path / "summary.json"), updates)


def load_sweep(sweep: Path) -> list[Run]:
    """Every finished cell of a sweep directory, in manifest order."""
    sweep = Path(sweep)
    manifest = read_json(sweep / "manifest.json")
    return [load_run(sweep / "cells" / name) for name, entry in manifest["cells"].items()
            if entry.get("status") == "done"]


def save_checkpoint(folder: Path, tensors: dict[str, Tensor], state: dict) -> None:
    """Resume state: tensors (parameters, optimizer moments) in safetensors, the rest in JSON.
    Both files name the step, so a kill between the two writes is never trusted."""
    folder = Path(folder)
    write_tensors(folder / "state.safetensors", {**tensors, "checkpoint_step": torch.tensor(state["step"])})
    write_json(folder / "state.json", state)


def load_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict] | None:
    folder = Path(folder)
    if not (folder / "state.json").exists():
        return None
    try:
        state = read_json(folder / "state.json")
        tensors = read_tensors(folder / "state.safetensors")
    except RunError:
        return None  # a checkpoint killed mid-write: start the cell again
    if int(tensors.pop("checkpoint_step", -1)) != state.get("step"):
        return None  # the two files come from different checkpoints
    return tensors, state


def write_cell_config(folder: Path, cell: CellSpec) -> None:
    write_json(Path(folder) / "config.json", spec_to_dict(cell))
