"""Which part of a tidy table a figure or table shows: the paper's layer and target choices, the
matrices present, and a sentence saying what a median pools. pandas only (no matplotlib, no torch),
so the tables and the figures share one rule for each choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PAPER_MODULES = ("q", "v")  # the paper's φ figures show ΔWq and ΔWv (Hu et al. 2021, §7.2)


class MissingData(ValueError):
    """The table has no cells of the kind a figure needs; the message says which."""


def middle_layer(layers: Sequence[int]) -> int:
    """layers[(n − 1) // 2]: the paper's 48th of 96 layers (1-based) for n = 96."""
    layers = sorted(set(int(x) for x in layers))
    if not layers:
        raise MissingData("the table has no layer")
    return layers[(len(layers) - 1) // 2]


def spread_layers(layers: Sequence[int], every_up_to: int = 6) -> list[int]:
    """Every layer of a small model, else first, ⅓, ⅔ and last (the paper's 1, 32, 64, 96 of 96)."""
    layers = sorted(set(int(x) for x in layers))
    n = len(layers)
    if n <= every_up_to:
        return layers
    return sorted({layers[max(0, round(n * f) - 1)] for f in (0, 1 / 3, 2 / 3, 1)})


def pick_targets(table: pd.DataFrame, modules: Sequence[str] = PAPER_MODULES) -> str:
    """The target set to show: "q,v" (the paper's) if present, else the one adapting the most of
    `modules`, else the first."""
    sets = [t for t in table["targets"].dropna().unique() if t]
    if not sets:
        raise MissingData("no LoRA cells in the table")
    return max(sets, key=lambda t: (t == ",".join(modules), len(set(t.split(",")) & set(modules)), -len(t)))


def shown_modules(table: pd.DataFrame, modules: Sequence[str] | None = None) -> list[str]:
    """The matrix kinds to draw: those of `modules` (default the paper's q, v) the table has, else
    the first two it has (a v-only, MLP-only or fused-qkv adapter still gets its figure)."""
    present = list(dict.fromkeys(table["module"].dropna()))
    wanted = [m for m in (modules or PAPER_MODULES) if m in present]
    if modules is not None and not wanted:
        raise MissingData(f"no matrix {', '.join(modules)} in the table (it has {', '.join(map(str, present))})")
    return wanted or present[:2]


def first_module(table: pd.DataFrame, preferred: str = "q") -> str:
    """`preferred` when the table has it, else the first matrix kind it has."""
    present = list(dict.fromkeys(table["module"].dropna()))
    if not present:
        raise MissingData("the table has no matrix")
    return preferred if preferred in present else str(present[0])


def select(table: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows whose columns equal the given values (a column absent from the table selects nothing)."""
    mask = np.ones(len(table), dtype=bool)
    for column, value in equal.items():
        if column not in table:
            return table.iloc[0:0]
        mask &= (table[column] == value).to_numpy()
    return table[mask]


def pooled(table: pd.DataFrame, over: Sequence[str] = ("layer", "seed")) -> str:
    """What a median over the rows of `table` pools, in words: "median over 4 layers and 2 seeds",
    or "layer 1, seed 0" when a column has one value (then nothing is pooled over it)."""
    many, one = [], []
    for column in over:
        values = table[column].dropna().unique() if column in table else []
        if len(values) > 1:
            many.append(f"{len(values)} {column}s")
        elif len(values) == 1:
            one.append(f"{column} {values[0]}")
    text = f"median over {' and '.join(many)}" if many else "one value each"
    return f"{text} ({', '.join(one)})" if one else text
