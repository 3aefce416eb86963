"""``lowrank-lab sample-data``: write a chat- or instruction-format sample built from data available
offline (``store.samples``), for trying ``data.task = "chat"`` or ``"instruction"``."""

from __future__ import annotations

from pathlib import Path

from lowrank_lab.store.samples import write_sample


def sample_data(kind: str, out: Path) -> tuple[Path, int]:
    """Write the `kind` sample ("chat" or "instruction") to `out` (.parquet or .jsonl); (its path, rows)."""
    return write_sample(kind, out)
