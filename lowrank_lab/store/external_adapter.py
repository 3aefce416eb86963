"""The record of a PEFT adapter that lowrank-lab did not train, as ``store.adapters.load_external``
reads it: its updates and its W0, lazily. A record only: reading it is ``store.adapters``'s job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from lowrank_lab.maths.update import Update


@dataclass(frozen=True)
class ExternalAdapter:
    """A PEFT LoRA adapter read from disk.

    updates      {label: update}: a LowRankUpdate (A r×k, B d×r, scaling; ΔW = scaling·B·A, d×k;
                 kind "lora" or "lora-minus-init"), or for DoRA a DenseUpdate (kind "dora")
    W0           W0(update) → float32 d×k frozen weight of that update's module, read lazily
    notes        what the numbers mean and what was skipped, for the report"""

    path: Path
    config: dict
    updates: dict[str, Update]
    W0: Callable[[Update], Tensor]
    notes: list[str] = field(default_factory=list)
    base: Path | None = None

    @property
    def kind(self) -> dict[str, str]:
        """{label: update.kind}."""
        return {label: u.kind for label, u in self.updates.items()}
