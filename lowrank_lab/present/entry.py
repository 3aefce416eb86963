"""The registry's types: an ``Entry`` (one figure or table: what it needs, how it is drawn, its
caption) and the ``View`` it is drawn for. ``present.registry`` holds the one list of entries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from lowrank_lab.present.select import MissingData

Frames = Mapping[str, pd.DataFrame]


# The φ side each figure can show (store.tables.SIDES), in words for the captions.
SIDE_TEXT = {"A": "side A: right singular vectors of A, the paper's choice (§7.2)",
             "B": "side B: left singular vectors of B (the paper's footnote 7)",
             "dW_right": "side dW_right: right singular vectors of ΔW",
             "dW_left": "side dW_left: left singular vectors of ΔW"}


@dataclass(frozen=True)
class View:
    """What to show of a sweep: the layer (None: each entry's default, the middle one), the φ side
    and the matrix kinds of the φ figures (None: the paper's q and v, else the first two present)."""

    layer: int | None = None
    side: str = "A"
    modules: tuple[str, ...] | None = None

    @property
    def module(self) -> str | None:
        """The one matrix of single-matrix figures (Fig. 8): the first of `modules`."""
        return self.modules[0] if self.modules else None


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One figure or table. `name` is its file stem (fig3_phi_ranks.png, table6_rank_by_target.md)."""

    name: str
    paper: str  # its name in the paper: "Figure 3", "Table 7", "App. H.4"; or the source it follows
    title: str
    kind: str  # "figure" or "table"
    needs: tuple[str, ...]  # cached analysis tables (store.tables names) it is drawn from
    draw: Callable[..., object] = field(repr=False)
    caption: str  # what is plotted: layer, matrices, side, what is pooled, what a band is
    skip_note: str  # how to get it when the sweep lacks its cells
    paper_note: str = ""  # the paper's statement to compare with
    paper_table: pd.DataFrame | None = field(default=None, repr=False, compare=False)  # same units as ours

    def caption_for(self, view: View = View()) -> str:
        """The caption, naming the φ side shown."""
        return self.caption.replace("{side}", SIDE_TEXT.get(view.side, f"side {view.side}"))

    def render(self, frames: Frames, view: View = View()):
        """The figure or display table; MissingData when there is nothing to show."""
        out = self.draw(frames, view)
        if isinstance(out, pd.DataFrame) and out.empty:
            raise MissingData(f"the sweep has no cells for {self.paper}")
        return out
