"""Where every file of a sweep lives, and the reading and writing of its JSON records.

No torch here (tensors are ``store.tensors``, checkpoints ``store.checkpoints``), so the CLI can
check a spec, its paths and the sweep lock before loading anything heavy, and figures and tables
can find their inputs without torch. A sweep directory::

    <out_dir>/<sweep name>/
        spec.json                  the resolved ExperimentSpec and its provenance
        manifest.json              one entry per cell: status, best metric, failure, pack
        .lock                      held by the one process that writes the sweep
        packs/<pack id>/           resume state of a pack in progress (removed when it finishes)
        cells/<cell name>/
            config.json            the resolved CellSpec
            adapter/               PEFT format: adapter_config.json + adapter_model.safetensors
            weights.safetensors    trained weights for full fine-tuning / BitFit (no adapter)
            metrics.jsonl          one line per evaluation
            tensorboard/           the same values as TensorBoard events (train.report_to)
            summary.json           best evaluation, trainable parameters, examples/s, provenance
            snapshots/             factors A, B and head at train.snapshot_every steps (store.snapshots)
        analysis/                  tidy tables computed from the cells (CSV), figures
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lowrank_lab.spec import CellSpec, ExperimentSpec, SpecError, cell_from_dict, changed_keys, spec_to_dict
from lowrank_lab.store import files
from lowrank_lab.store.files import RunError
from lowrank_lab.store.records import CellSummary, Manifest, ManifestEntry

# The sections of spec.json that a rerun into the same directory must keep; the sweep axes may grow.
SAME_ON_RERUN = ("model", "data", "train")

# ---------------------------------------------------------------------------------------------
# Paths


def sweep_dir(spec: ExperimentSpec) -> Path:
    return Path(spec.sweep.out_dir) / spec.sweep.name


def spec_path(sweep: Path) -> Path:
    return Path(sweep) / "spec.json"


def manifest_path(sweep: Path) -> Path:
    return Path(sweep) / "manifest.json"


def analysis_dir(sweep: Path) -> Path:
    return Path(sweep) / "analysis"


def pack_dir(sweep: Path, pack_id: str) -> Path:
    return Path(sweep) / "packs" / pack_id


def cell_dir(sweep: Path, cell: CellSpec | str) -> Path:
    return Path(sweep) / "cells" / (cell if isinstance(cell, str) else cell.name)


def config_path(cell_folder: Path) -> Path:
    return Path(cell_folder) / "config.json"


def summary_path(cell_folder: Path) -> Path:
    return Path(cell_folder) / "summary.json"


def metrics_path(cell_folder: Path) -> Path:
    return Path(cell_folder) / "metrics.jsonl"


def tensorboard_dir(cell_folder: Path) -> Path:
    """The cell's TensorBoard event files (train.report_to = ["tensorboard"])."""
    return Path(cell_folder) / "tensorboard"


def wandb_dir(cell_folder: Path) -> Path:
    """Where W&B puts its wandb/ folder of the cell's offline runs, <cell>/wandb/offline-run-*/ (train.report_to =
    ["wandb"]): the cell's own folder."""
    return Path(cell_folder)


def weights_path(cell_folder: Path) -> Path:
    """Full fine-tuning and BitFit: the trained weights (and head), named as in the base model."""
    return Path(cell_folder) / "weights.safetensors"


def adapter_dir(cell_folder: Path) -> Path:
    return Path(cell_folder) / "adapter"


def snapshot_dir(cell_folder: Path) -> Path:
    return Path(cell_folder) / "snapshots"


# ---------------------------------------------------------------------------------------------
# Records


def read_spec(sweep: Path) -> dict[str, Any]:
    """spec.json as written: the resolved spec's sections and its provenance."""
    data = files.read_json(spec_path(sweep))
    if not isinstance(data, dict):
        raise RunError(f"{spec_path(sweep)}: should be an object of spec sections")
    return data


def write_spec(sweep: Path, spec: ExperimentSpec, provenance: dict[str, Any]) -> None:
    files.write_json(spec_path(sweep), {**spec_to_dict(spec), "provenance": provenance})


def read_manifest(sweep: Path) -> Manifest:
    path = manifest_path(sweep)
    return Manifest.from_dict(files.read_json(path), str(path))


def write_manifest(sweep: Path, manifest: Manifest) -> None:
    files.write_json(manifest_path(sweep), manifest.to_dict())


def read_summary(cell_folder: Path) -> CellSummary:
    path = summary_path(cell_folder)
    return CellSummary.from_dict(files.read_json(path), str(path))


def write_summary(cell_folder: Path, summary: CellSummary) -> None:
    files.write_json(summary_path(cell_folder), summary.to_dict())


def read_cell_config(cell_folder: Path) -> CellSpec:
    path = config_path(cell_folder)
    return cell_from_dict(files.read_json(path), str(path))


def read_metrics(cell_folder: Path) -> list[dict]:
    return files.read_jsonl(metrics_path(cell_folder))


def append_metrics(cell_folder: Path, record: dict) -> None:
    files.append_jsonl(metrics_path(cell_folder), record)


def keep_metrics_until(cell_folder: Path, step: int) -> None:
    """Drop the evaluations after `step` (a resumed pack redoes them)."""
    files.write_jsonl(metrics_path(cell_folder), [r for r in read_metrics(cell_folder) if r["step"] <= step])


def start_cell(cell_folder: Path, cell: CellSpec) -> None:
    """A cell about to train from scratch: its config, and no results of an earlier attempt."""
    files.write_json(config_path(cell_folder), spec_to_dict(cell))
    for stale in (metrics_path(cell_folder), summary_path(cell_folder)):
        stale.unlink(missing_ok=True)
    shutil.rmtree(tensorboard_dir(cell_folder), ignore_errors=True)
    shutil.rmtree(snapshot_dir(cell_folder), ignore_errors=True)


def cell_entry(sweep: Path, name: str) -> ManifestEntry:
    """A cell's state from its own files: done/failed (summary.json), running (started: config.json)
    or pending."""
    folder = cell_dir(sweep, name)
    if summary_path(folder).exists():
        summary = read_summary(folder)
        return ManifestEntry(summary.status, summary.error, summary.best_value, summary.pack.id)
    return ManifestEntry("running" if config_path(folder).exists() else "pending")


def update_manifest(sweep: Path, names: Iterable[str], interrupted: Mapping[str, int] | None = None) -> Manifest:
    """The sweep's index rebuilt from the cells' own files (rank 0 alone writes it); the cells of
    `interrupted` (name → the step their pack resumes from) are marked so."""
    interrupted = interrupted or {}
    manifest = Manifest({name: ManifestEntry("interrupted", step=interrupted[name]) if name in interrupted
                         else cell_entry(sweep, name) for name in names})
    write_manifest(sweep, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# Claiming a sweep directory: paths, the spec of a rerun, the lock. All before anything heavy.


def check_paths(spec: ExperimentSpec) -> Path:
    """The sweep directory, or a one-line error when a file stands where a folder must be."""
    sweep = sweep_dir(spec)
    for folder in (sweep, *sweep.parents):
        if folder.exists():
            if not folder.is_dir():
                key = "sweep.name" if folder == sweep else "sweep.out_dir"
                raise RunError(f"{key}: {folder} is a file, not a folder")
            if not os.access(folder, os.W_OK):
                raise RunError(f"sweep.out_dir: cannot write into {folder}")
            break
    return sweep


def check_same_spec(sweep: Path, spec: ExperimentSpec) -> None:
    """A rerun into a sweep directory must mean the same experiment; only the sweep axes may grow."""
    if not spec_path(sweep).exists():
        return
    old, new = read_spec(sweep), spec_to_dict(spec)
    old, new = ({s: d.get(s) for s in SAME_ON_RERUN} for d in (old, new))
    keys = changed_keys(old, new)
    if keys:
        shown = "; ".join(f"{k}: {_at(old, k)!r} then, {_at(new, k)!r} now" for k in keys[:3])
        more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
        raise SpecError(f"{spec_path(sweep)}: this sweep directory was made with a different spec ({shown}{more}); "
                        "use another sweep.name or out_dir")


def _at(values: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        values = values.get(key) if isinstance(values, dict) else None
    return values


@contextlib.contextmanager
def claim_sweep(spec: ExperimentSpec, lock: bool | None = None) -> Iterator[Path]:
    """Check the sweep's paths and, for a rerun, its spec; then hold the sweep lock (with `lock`:
    the one process that writes; by default the process of rank 0, ``RANK`` under torchrun). A
    claim that fails, or is left before anything is written, leaves no trace: the folders it made
    are removed again."""
    if lock is None:
        lock = os.environ.get("RANK", "0") == "0"
    sweep = check_paths(spec)
    check_same_spec(sweep, spec)
    if not lock:
        yield sweep
        return
    made = [p for p in (sweep, *sweep.parents) if not p.exists()]
    with files.sweep_lock(sweep):
        try:
            yield sweep
        finally:
            if made and [p.name for p in sweep.iterdir()] == [".lock"]:
                (sweep / ".lock").unlink()
                for folder in made:  # deepest first
                    folder.rmdir()
