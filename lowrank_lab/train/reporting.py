"""Training curves where people watch them: every record a cell appends to metrics.jsonl, also as
TensorBoard scalars (``train.report_to = ["tensorboard"]``) or in an offline Weights & Biases run
(``"wandb"``; ``wandb sync <cell>/wandb/offline-run-*`` uploads it later).

One run per cell, in the cell's ``tensorboard/`` folder (``store.layout.tensorboard_dir``): its resolved
spec as hyperparameters (TensorBoard's HParams tab, flattened to ``section.key``), and each record's
numbers as scalars tagged ``<kind>/<name>`` at its step (``train/train_loss`` every train.log_every
steps; ``eval/bleu``, ``eval/dev_loss``, ... at each evaluation), the same values as metrics.jsonl
(TensorBoard stores them as float32). A resumed pack purges the events after its checkpoint's step,
as metrics.jsonl drops them. W&B: one offline run per cell (project "lowrank-lab", the sweep as
its group, the cell as its name, the same flattened spec as its config), each record logged at its
step with the same keys; a resumed pack starts a second offline run at its checkpoint's step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lowrank_lab.spec import CellSpec, SpecError, spec_to_dict
from lowrank_lab.store import layout


def check_reporters(report_to: Sequence[str]) -> None:
    """SpecError, before anything is written, when a reporter's package is missing."""
    for name in report_to:
        try:
            __import__(name)  # tensorboard: torch's SummaryWriter needs it
        except ImportError:
            raise SpecError(f"train.report_to=['{name}'] needs the {name} package: "
                            f"pip install 'lowrank-lab[{name}]'") from None


def hyperparameters(cell: CellSpec) -> dict[str, object]:
    """The cell's resolved spec flattened to ``{"section.key": value}``; lists and None as text."""
    flat = {}
    for section, values in spec_to_dict(cell).items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            ok = isinstance(value, (bool, int, float, str))
            flat[f"{section}.{key}"] = value if ok else str(value)
    return flat


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl record as ``{"<kind>/<name>": value}`` (step and kind excepted)."""
    kind = record.get("kind", "eval")
    return {f"{kind}/{k}": float(v) for k, v in record.items()
            if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Reporters:
    """The TensorBoard writers and W&B runs of a pack's cells (none when train.report_to is empty)."""

    def __init__(self, report_to: Sequence[str], dirs: Sequence[Path], cells: Sequence[CellSpec], start_step: int = 0):
        self.writers, self.runs = [], []
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            for folder, cell in zip(dirs, cells, strict=True):
                writer = SummaryWriter(str(layout.tensorboard_dir(folder)), purge_step=start_step or None)
                if not start_step:  # a resumed run has them from its start
                    for summary in hparams(hyperparameters(cell), {"eval/dev_loss": 0.0}):
                        writer.file_writer.add_summary(summary)
                self.writers.append(writer)
        if "wandb" in report_to:
            import wandb

            self.runs = [wandb.init(project="lowrank-lab", group=Path(folder).parent.parent.name, name=cell.name,
                                    dir=str(layout.wandb_dir(folder)), config=hyperparameters(cell), mode="offline",
                                    reinit="create_new", settings=wandb.Settings(silent=True))
                         for folder, cell in zip(dirs, cells, strict=True)]

    def log(self, n: int, record: dict) -> None:
        """Cell n's record (as appended to its metrics.jsonl)."""
        values = scalars(record) if self.writers or self.runs else {}
        if self.writers:
            for tag, value in values.items():
                self.writers[n].add_scalar(tag, value, record["step"])
        if self.runs:
            self.runs[n].log(values, step=record["step"])

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for run in self.runs:
            run.finish()
