"""W0 of a sweep's base model for the analyses: the frozen weights an analysis compares ΔW with.

``base_reader(name, ...)`` loads the base once per process (what the cells' adapter paths are
relative to: AutoModel for an encoder, AutoModelForCausalLM for a decoder; ``model.kind``) and
answers ``W0(path)`` (d×k, out×in, whatever the module stores) and ``as_W0(path, W)`` (a trained
copy of that module's weight, put in the same layout). ``analysis.base.W0Source`` keeps the SVDs.
"""

from __future__ import annotations

import functools

from torch import Tensor

from lowrank_lab.model.base import Conv1D
from lowrank_lab.model.lora import weight_as_W0
from lowrank_lab.store.models import load_model


class BaseReader:
    """The base model's matrices by module path (paths as its own named_modules gives them)."""

    def __init__(self, module, name: str):
        self.module, self.name = module, name

    def W0(self, path: str) -> Tensor:
        return weight_as_W0(self.module.get_submodule(path)).detach()

    def as_W0(self, path: str, W: Tensor) -> Tensor:
        """A trained weight of module `path`, stored as the module stores it, in the d×k layout."""
        return W.mT if isinstance(self.module.get_submodule(path), Conv1D) else W


@functools.lru_cache(maxsize=2)
def base_reader(name: str, revision: str | None = None, kind: str = "auto", option: str = "model.name") -> BaseReader:
    """The base model `name` (a folder, hub id or embedded model), loaded once per process:
    every analysis command of a sweep needs the same W0s. `option` names the setting for errors."""
    return BaseReader(load_model(name, revision, kind=kind, option=option).module, str(name))
