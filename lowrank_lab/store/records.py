"""Typed records of a sweep's own JSON files: a cell's summary and the sweep's manifest.

Attribute names are the JSON keys. ``from_dict(data, source)`` checks the shape on the way in, so
a file that is valid JSON of the wrong shape (a key missing, a list where a number belongs, an
unknown status) is a one-line ``RunError`` naming the file and the dotted key, never a traceback
further on. Keys added after a file was written have defaults, so older sweeps still read.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any

from lowrank_lab.store.files import RunError

NUMBER = (int, float)
NONE = type(None)
CELL_STATUSES = ("done", "failed")
MANIFEST_STATUSES = ("pending", "running", "interrupted", "done", "failed")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", str: "a string", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _kind_names(kinds: tuple[type, ...]) -> str:
    names = dict.fromkeys(_json_type(k()) if k is not NONE else "null" for k in kinds)
    return " or ".join(names)


def _check(value: Any, kinds: tuple[type, ...], source: str, key: str) -> Any:
    """`value` if it is one of `kinds` (true/false is never a number), else a RunError."""
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise RunError(f"{source}: key {key!r} should be {_kind_names(kinds)}, not {_json_type(value)}")
    return value


def _read(cls, data: Any, source: str, where: str = ""):
    """A `cls` record from a JSON object, each field checked against ``cls.KINDS``."""
    if not isinstance(data, dict):
        what = f"key {where[:-1]!r}" if where else "the file"
        raise RunError(f"{source}: {what} should be an object, not {_json_type(data)}")
    values = {}
    for f in fields(cls):
        key = f"{where}{f.name}"
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RunError(f"{source}: key {key!r} is missing")
            continue
        kind = cls.KINDS[f.name]
        value = data[f.name]
        values[f.name] = _read(kind, value, source, key + ".") if is_dataclass(kind) else _check(value, kind, source, key)
    return cls(**values)


def _choice(value: str, allowed: tuple[str, ...], source: str, key: str) -> None:
    if value not in allowed:
        raise RunError(f"{source}: key {key!r} is {value!r}, not one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------
# summary.json


@dataclass(frozen=True)
class TrainableParameters:
    """Trainable parameters of a cell: the adapter's Σ r·(d + k) (paper §5.1), the head's, their sum."""

    adapter: int
    head: int
    total: int
    KINDS = {"adapter": (int,), "head": (int,), "total": (int,)}


@dataclass(frozen=True)
class PackInfo:
    """The pack a cell was trained in: its id, its K, the step it resumed at, the process, and how
    often the planned pack was halved after running out of memory."""

    id: str
    size: int
    resumed_at_step: int = 0
    rank: int = 0
    data_parallel_processes: int = 1
    # times the planned pack was halved after running out of memory before this one ran
    out_of_memory_splits: int = 0
    KINDS = {"id": (str,), "size": (int,), "resumed_at_step": (int,), "rank": (int,),
             "data_parallel_processes": (int,), "out_of_memory_splits": (int,)}


@dataclass(frozen=True, kw_only=True)
class CellSummary:
    """A finished cell: status, best evaluation (step, epoch, train_loss and the task's metrics),
    size, speed and provenance."""

    cell: str
    status: str
    error: str | None = None
    best: dict[str, float] | None = None
    main_metric: str
    # the last evaluation (the learning-rate curves read it): same keys as best; None in older sweeps
    final: dict[str, float] | None = None
    task: str
    trainable_parameters: TrainableParameters
    pack: PackInfo
    wall_seconds: float | None = None
    steps: int = 0
    examples_per_second: float | None = None
    pack_examples_per_second: float | None = None
    throughput: dict[str, float] | None = None
    peak_gpu_memory_gib: float | None = None
    data: dict[str, Any] | None = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    KINDS = {"cell": (str,), "status": (str,), "error": (str, NONE), "best": (dict, NONE), "final": (dict, NONE),
             "main_metric": (str,), "task": (str,), "trainable_parameters": TrainableParameters,
             "pack": PackInfo, "wall_seconds": (*NUMBER, NONE), "steps": (int,),
             "examples_per_second": (*NUMBER, NONE), "pack_examples_per_second": (*NUMBER, NONE),
             "throughput": (dict, NONE), "peak_gpu_memory_gib": (*NUMBER, NONE), "data": (dict, NONE),
             "provenance": (dict,)}

    @property
    def best_value(self) -> float | None:
        """The best evaluation's main metric (None for a cell without a finite evaluation)."""
        return None if self.best is None else self.best[self.main_metric]

    @classmethod
    def from_dict(cls, data: Any, source: str) -> CellSummary:
        summary = _read(cls, data, source)
        _choice(summary.status, CELL_STATUSES, source, "status")
        for which in ("best", "final"):
            record = getattr(summary, which)
            if record is None:
                continue
            for key in ("step", "epoch", summary.main_metric):
                if key not in record:
                    raise RunError(f"{source}: key '{which}.{key}' is missing")
            for key, value in record.items():
                _check(value, NUMBER, source, f"{which}.{key}")
        return summary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# manifest.json


@dataclass(frozen=True)
class ManifestEntry:
    """One cell in the manifest: its status, failure, best main metric, pack, and for an
    interrupted cell the step its pack resumes from."""

    status: str
    error: str | None = None
    best: float | None = None
    pack: str | None = None
    step: int | None = None
    KINDS = {"status": (str,), "error": (str, NONE), "best": (*NUMBER, NONE), "pack": (str, NONE),
             "step": (int, NONE)}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: v for k, v in out.items() if v is not None or k in ("error", "best")}


@dataclass(frozen=True)
class Manifest:
    """The sweep's index, one entry per cell in sweep order; rebuilt from the cells' own files."""

    cells: dict[str, ManifestEntry]

    def names(self, status: str) -> list[str]:
        return [name for name, entry in self.cells.items() if entry.status == status]

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Manifest:
        if not isinstance(data, dict):
            raise RunError(f"{source}: the file should be an object, not {_json_type(data)}")
        if "cells" not in data:
            raise RunError(f"{source}: key 'cells' is missing")
        cells = _check(data["cells"], (dict,), source, "cells")
        entries = {}
        for name, entry in cells.items():
            entries[name] = _read(ManifestEntry, entry, source, f"cells.{name}.")
            _choice(entries[name].status, MANIFEST_STATUSES, source, f"cells.{name}.status")
        return cls(entries)

    def to_dict(self) -> dict[str, Any]:
        return {"cells": {name: entry.to_dict() for name, entry in self.cells.items()}}

