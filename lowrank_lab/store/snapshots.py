"""Factor snapshots during training (``train.snapshot_every``): one safetensors file per cell and step.

``<cell>/snapshots/step-<step>.safetensors`` holds each adapted matrix's A (r×k) and B (d×r) under
``<label>.A`` / ``<label>.B`` (float32, without the packing's zero padding) and the head's
``head.weight`` / ``head.bias`` (none for a decoder); its metadata names the step and, per label,
the module path, the scaling and whether the base stores W0ᵀ, so a snapshot reads back as the
``LowRankUpdate``s of that step. A resumed pack rewrites the snapshots after its checkpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.store.files import RunError
from lowrank_lab.store.layout import snapshot_dir
from lowrank_lab.store.tensors import read_tensors, write_tensors

_NAME = re.compile(r"step-(\d+)\.safetensors")


def snapshot_path(cell_folder: Path, step: int) -> Path:
    return snapshot_dir(cell_folder) / f"step-{int(step):07d}.safetensors"


def write_snapshot(cell_folder: Path, step: int, updates: Iterable[LowRankUpdate],
                   head: dict[str, Tensor] | None = None) -> Path:
    """Save the factors of one cell at `step` (and its head's weight and bias, when it has one)."""
    tensors, modules = {}, {}
    for u in updates:
        tensors[f"{u.label}.A"], tensors[f"{u.label}.B"] = u.A.detach().float(), u.B.detach().float()
        modules[u.label] = {"path": u.path, "scaling": u.scaling, "fan_in_fan_out": u.fan_in_fan_out}
    for key, value in (head or {}).items():
        tensors[f"head.{key}"] = value.detach().float()
    path = snapshot_path(cell_folder, step)
    write_tensors(path, tensors, {"step": str(int(step)), "modules": json.dumps(modules)})
    return path


def snapshot_steps(cell_folder: Path) -> list[int]:
    """The steps a cell has snapshots of, ascending ([] when none)."""
    folder = snapshot_dir(cell_folder)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))


def read_snapshot(cell_folder: Path, step: int) -> tuple[dict[str, LowRankUpdate], dict[str, Tensor]]:
    """({label: LowRankUpdate}, {"weight", "bias": the head's}) of a cell at `step`."""
    path = snapshot_path(cell_folder, step)
    tensors = read_tensors(path)
    try:
        modules = json.loads(_metadata(path)["modules"])
    except (KeyError, ValueError):
        raise RunError(f"{path}: not a lowrank-lab snapshot (no 'modules' metadata)") from None
    updates = {label: LowRankUpdate(label, m["path"], tensors[f"{label}.A"], tensors[f"{label}.B"],
                                    float(m["scaling"]), bool(m["fan_in_fan_out"])) for label, m in modules.items()}
    head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    return updates, head


def read_snapshots(cell_folder: Path) -> dict[int, dict[str, LowRankUpdate]]:
    """{step: {label: LowRankUpdate}} of every snapshot of a cell."""
    return {step: read_snapshot(cell_folder, step)[0] for step in snapshot_steps(cell_folder)}


def keep_snapshots_until(cell_folder: Path, step: int) -> None:
    """Remove the snapshots after `step` (a resumed pack writes them again)."""
    for s in snapshot_steps(cell_folder):
        if s > step:
            snapshot_path(cell_folder, s).unlink()


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}
