"""W0 of a sweep's base model for the analyses: the frozen weights an analysis compares ΔW with.

``base_reader(name, ...)`` answers ``W0(path)`` (d×k, out×in, whatever the module stores) and
``as_W0(path, W)`` (a trained copy of that module's weight, put in the same layout), for module
paths relative to the model the cells' adapters are relative to (AutoModel for an encoder,
AutoModelForCausalLM for a decoder; ``model.kind``). When the model is a folder of safetensors
(the embedded models, anything saved by ``save_pretrained``, a hub snapshot) each matrix is read
from its shard on request, in the dtype it is stored in, and never the whole model: an 8B base
costs one matrix of host memory at a time. Otherwise (a hub id not on disk) the model is loaded
once per process. ``analysis.base.W0Source`` keeps the SVDs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from lowrank_lab.model.base import Conv1D, is_causal_config
from lowrank_lab.model.lora import weight_as_W0
from lowrank_lab.store.adapters import LazyWeights
from lowrank_lab.store.models import check_model_folder, load_model


class BaseReader:
    """The base model's matrices by module path, from the loaded model."""

    def __init__(self, module, name: str):
        self.module, self.name = module, name
        self.route = "model"

    def W0(self, path: str) -> Tensor:
        return weight_as_W0(self.module.get_submodule(path)).detach()

    def as_W0(self, path: str, W: Tensor) -> Tensor:
        """A trained weight of module `path`, stored as the module stores it, in the d×k layout."""
        return W.mT if isinstance(self.module.get_submodule(path), Conv1D) else W


class ShardReader(BaseReader):
    """The base model's matrices by module path, each read from its safetensors shard when asked
    (``store.adapters.LazyWeights``); the model itself is built on the meta device only, to know
    which modules store their weight transposed (GPT-2's Conv1D)."""

    def __init__(self, folder: Path, name: str, kind: str):
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(folder))
        decoder = kind == "causal" or kind == "auto" and is_causal_config(config)
        with torch.device("meta"):
            skeleton = (AutoModelForCausalLM if decoder else AutoModel).from_config(config)
        super().__init__(skeleton, name)
        self.weights, self.route = LazyWeights(folder), "safetensors"

    def W0(self, path: str) -> Tensor:
        W = self.weights[self.weights.key_for(path)]
        return W.mT if isinstance(self.module.get_submodule(path), Conv1D) else W


@functools.lru_cache(maxsize=2)
def base_reader(name: str, revision: str | None = None, kind: str = "auto", option: str = "model.name") -> BaseReader:
    """The reader of base model `name` (a folder, hub id or embedded model), made once per process:
    every analysis command of a sweep needs the same W0s. `option` names the setting for errors."""
    folder = check_model_folder(name, option)
    if folder is not None and any(folder.glob("*.safetensors")) and revision is None:
        return ShardReader(folder, str(name), kind)
    return BaseReader(load_model(name, revision, kind=kind, option=option).module, str(name))
