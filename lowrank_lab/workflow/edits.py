"""What ``truncate`` and ``mitigate`` share: a saved sweep opened for evaluation (its spec, finished
cells, task, tokenised dev split and base model, read once), and each cell's head."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from lowrank_lab.analysis.base import W0Source
from lowrank_lab.spec import ExperimentSpec, build_spec
from lowrank_lab.store import files, layout, peft_format, runs
from lowrank_lab.store.base_weights import BaseReader, base_reader
from lowrank_lab.store.runs import Run
from lowrank_lab.train.batches import resolve_device
from lowrank_lab.train.data import LOWER_IS_BETTER
from lowrank_lab.train.sweep import Inputs, load_inputs


@dataclass
class Opened:
    """A sweep ready for evaluating edits of its cells."""

    sweep: Path
    spec: ExperimentSpec
    runs: list[Run]
    inputs: Inputs
    W0: W0Source
    device: torch.device

    @property
    def metric(self) -> str:
        return self.inputs.task.main_metric

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    def head(self, run: Run) -> dict[str, torch.Tensor] | None:
        """The cell's trained head (None for a decoder)."""
        if self.inputs.decoder:
            return None
        if run.spec.lora.method == "lora":
            weight, bias, _ = peft_format.read_head(run.path)
            return {"weight": weight, "bias": bias}
        weights = self.full_weights(run)
        return {"weight": weights["head.weight"], "bias": weights["head.bias"]}

    def full_weights(self, run: Run) -> dict[str, torch.Tensor]:
        from lowrank_lab.store import tensors

        return tensors.read_tensors(layout.weights_path(run.path))


def open_sweep(sweep: Path, base: str | None = None, device: str = "cpu") -> Opened:
    """Read a sweep's spec and finished cells, load its task and base model (`base`: another folder
    or hub id of the same model); RunError when it has no finished cell."""
    sweep = Path(sweep)
    sweep_runs = runs.load_sweep(sweep)
    if not sweep_runs:
        raise files.RunError(f"{sweep}: no finished cells to evaluate")
    spec = build_spec({k: v for k, v in layout.read_spec(sweep).items() if k != "provenance"}, str(layout.spec_path(sweep)))
    if base:
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, name=str(base)))
    inputs = load_inputs(spec, [])
    return Opened(sweep, spec, sweep_runs, inputs, loaded_weights(inputs.base, spec.model.name), resolve_device(device))


def loaded_weights(module: torch.nn.Module, name: str) -> W0Source:
    """W0 of a base model already loaded (the one the variants are built on), with its SVDs."""
    return W0Source(BaseReader(module, name).W0, name)


def base_weights(spec, base: str | None = None) -> W0Source:
    """W0 of the sweep's base model (`base`: another folder or hub id of the same model), read
    from its safetensors shards when it has them (``store.base_weights``)."""
    reader = (base_reader(str(base), None, spec.model.kind, "--base") if base
              else base_reader(spec.model.name, spec.model.revision, spec.model.kind))
    return W0Source(reader.W0, reader.name)
