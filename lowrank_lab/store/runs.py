"""A sweep's finished cells as objects: spec, evaluations, summary and low-rank updates.

Paths and JSON records are ``store.layout``'s (torch-free); the adapters are read through
``store.peft_format``, once per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.spec import CellSpec
from lowrank_lab.store.layout import (adapter_dir, cell_dir, read_cell_config, read_manifest, read_metrics,
                                      read_summary)
from lowrank_lab.store.peft_format import ADAPTER_CONFIG, read_adapter
from lowrank_lab.store.records import CellSummary


@dataclass(frozen=True)
class Run:
    """A finished cell, as saved: its spec, its evaluations and its low-rank updates by label."""

    path: Path
    spec: CellSpec
    metrics: list[dict]
    summary: CellSummary
    updates: dict[str, LowRankUpdate]


def load_run(path: Path) -> Run:
    path = Path(path)
    updates = {}
    if (adapter_dir(path) / ADAPTER_CONFIG).exists():
        _, by_path, _ = read_adapter(adapter_dir(path))
        updates = {u.label: u for u in by_path.values()}
    return Run(path, read_cell_config(path), read_metrics(path), read_summary(path), updates)


def load_sweep(sweep: Path) -> list[Run]:
    """Every finished cell of a sweep directory, in manifest order."""
    return [load_run(cell_dir(sweep, name)) for name in read_manifest(sweep).names("done")]
