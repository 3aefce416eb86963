"""Training curves where people watch them: every record a cell appends to metrics.jsonl, also as
TensorBoard scalars (``train.report_to = ["tensorboard"]``).

One run per cell, in the cell's ``tensorboard/`` folder (``store.layout.tensorboard_dir``): its resolved
spec as hyperparameters (TensorBoard's HParams tab, flattened to ``section.key``), and each record's
numbers as scalars tagged ``<kind>/<name>`` at its step (``train/train_loss`` every train.log_every
steps; ``eval/bleu``, ``eval/dev_loss``, ... at each evaluation), the same values as metrics.jsonl
(TensorBoard stores them as float32). A resumed pack purges the events after its checkpoint's step,
as metrics.jsonl drops them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lowrank_lab.spec import CellSpec, SpecError, spec_to_dict
from lowrank_lab.store import layout


def check_reporters(report_to: Sequence[str]) -> None:
    """SpecError, before anything is written, when a reporter's package is missing."""
    if "tensorboard" in report_to:
        try:
            import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)
        except ImportError:
            raise SpecError("train.report_to=['tensorboard'] needs the tensorboard package: "
                            "pip install 'lowrank-lab[tensorboard]'") from None


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
    """The TensorBoard writers of a pack's cells (none when train.report_to is empty)."""

    def __init__(self, report_to: Sequence[str], dirs: Sequence[Path], cells: Sequence[CellSpec], start_step: int = 0):
        self.writers = []
        if "tensorboard" not in report_to:
            return
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        for folder, cell in zip(dirs, cells, strict=True):
            writer = SummaryWriter(str(layout.tensorboard_dir(folder)), purge_step=start_step or None)
            if not start_step:  # a resumed run has them from its start
                for summary in hparams(hyperparameters(cell), {"eval/dev_loss": 0.0}):
                    writer.file_writer.add_summary(summary)
            self.writers.append(writer)

    def log(self, n: int, record: dict) -> None:
        """Cell n's record (as appended to its metrics.jsonl)."""
        if self.writers:
            for tag, value in scalars(record).items():
                self.writers[n].add_scalar(tag, value, record["step"])

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
