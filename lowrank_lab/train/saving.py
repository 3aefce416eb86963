"""Saving a cell of a pack: its adapter in PEFT's format (or its trained weights) and its head, and
its factor snapshots during training (``train.snapshot_every``, ``store.snapshots``)."""

from __future__ import annotations

from pathlib import Path

import torch

from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.model.base import CLASSIFIER_PREFIX
from lowrank_lab.spec import ADAPTER_METHODS
from lowrank_lab.store import layout, peft_format, snapshots
from lowrank_lab.store import tensors as tensors_io
from lowrank_lab.store.models import portable_name
from lowrank_lab.train.pack import Pack, cell_slices


def save_cell(folder: Path, pack: Pack, n: int, base_model: str) -> None:
    """Save cell n as it is now: a PEFT adapter (LoRA) with its head beside it, or its trained
    weights (full, BitFit). The adapter's paths are the plain base model's (our Classifier's
    ``encoder.`` removed), so PEFT loads it on ``AutoModel.from_pretrained(base_model)``; a decoder's
    are the causal LM's (task_type CAUSAL_LM, no head), for ``AutoModelForCausalLM``."""
    cell = pack.cells[n]
    tensors = _cell_tensors(pack, n)
    head = {} if pack.decoder else {"weight": tensors.pop("head.weight"), "bias": tensors.pop("head.bias")}
    if cell.lora.method in ADAPTER_METHODS:  # a PEFT prefix adapter, or bottleneck adapters; the head beside
        peft_format.save_adapter_set(folder, pack.adapters, n, base_model=portable_name(base_model),
                                     revision=cell.model.revision, task_type="CAUSAL_LM" if pack.decoder else "FEATURE_EXTRACTION")
        if not pack.decoder:
            peft_format.save_head(folder, head["weight"], head["bias"], pooling=pack.model.pooling)
        return
    if cell.lora.method != "lora":
        weights = {k.removeprefix("model."): v for k, v in tensors.items()}
        tensors_io.write_tensors(layout.weights_path(folder), {**weights, **{f"head.{k}": v for k, v in head.items()}})
        return
    lora = cell.lora
    peft_format.save_adapter(layout.adapter_dir(folder), _lora_updates(pack, n, tensors), base_model=portable_name(base_model),
                             revision=cell.model.revision, alpha=lora.alpha, scaling_rule=lora.scaling_rule,
                             init=lora.init, dropout=lora.dropout,
                             task_type="CAUSAL_LM" if pack.decoder else "FEATURE_EXTRACTION")
    if not pack.decoder:
        peft_format.save_head(folder, head["weight"], head["bias"], pooling=pack.model.pooling)


def _cell_tensors(pack: Pack, n: int) -> dict[str, torch.Tensor]:
    """Cell n's trained tensors (``cell_slices``) as float32 copies on the CPU."""
    return {k: v.detach().float().cpu().clone() for k, v in cell_slices(pack, n).items()}


def _lora_updates(pack: Pack, n: int, tensors: dict[str, torch.Tensor]) -> list[LowRankUpdate]:
    """Cell n's LowRankUpdates from its ``_cell_tensors``, paths relative to the plain base model."""
    return [LowRankUpdate(pack.labels[path], path if pack.decoder else path.removeprefix(CLASSIFIER_PREFIX),
                          tensors[f"{path}.lora_A"], tensors[f"{path}.lora_B"], float(layer.scaling[n]),
                          layer.fan_in_fan_out)
            for path, layer in pack.layers.items() if layer.ranks[n]]


def save_snapshot(folder: Path, pack: Pack, n: int, step: int) -> None:
    """Cell n's factors A, B (and head) at `step`, when it is a LoRA cell."""
    if pack.cells[n].lora.method != "lora":
        return
    tensors = _cell_tensors(pack, n)
    head = {} if pack.decoder else {"weight": tensors["head.weight"], "bias": tensors["head.bias"]}
    snapshots.write_snapshot(folder, step, _lora_updates(pack, n, tensors), head)
