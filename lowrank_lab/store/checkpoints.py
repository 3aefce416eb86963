"""A pack's resume state: parameters, optimizer moments and RNG in safetensors, the rest in JSON.

Both files name the step, so a kill between the two writes is never trusted; the folder
(``layout.pack_dir``) goes away when its pack finishes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from lowrank_lab.store.files import RunError, read_json, write_json
from lowrank_lab.store.tensors import read_tensors, write_tensors


def _files(folder: Path) -> tuple[Path, Path]:
    return Path(folder) / "state.safetensors", Path(folder) / "state.json"


def save_checkpoint(folder: Path, tensors: dict[str, Tensor], state: dict) -> None:
    weights, meta = _files(folder)
    write_tensors(weights, {**tensors, "checkpoint_step": torch.tensor(state["step"])})
    write_json(meta, state)


def load_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict] | None:
    weights, meta = _files(folder)
    if not meta.exists():
        return None
    try:
        state = read_json(meta)
        tensors = read_tensors(weights)
    except RunError:
        return None  # a checkpoint killed mid-write: start the pack again
    if not _well_formed(state) or int(tensors.pop("checkpoint_step", -1)) != state["step"]:
        return None  # the two files come from different checkpoints, or not from this code
    return tensors, state


STATE_KINDS = {"step": int, "param_groups": list, "schedule": dict, "states": list, "cells": list}


def _well_formed(state) -> bool:
    return (isinstance(state, dict) and all(isinstance(state.get(k), kind) for k, kind in STATE_KINDS.items())
            and all(isinstance(s, dict) and {"best", "failed"} <= s.keys() for s in state["states"]))


def remove_checkpoint(folder: Path) -> None:
    """Delete a finished pack's state, its folder, and the packs/ folder when it is left empty."""
    folder = Path(folder)
    for path in _files(folder):
        path.unlink(missing_ok=True)
    for empty in (folder, folder.parent):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
