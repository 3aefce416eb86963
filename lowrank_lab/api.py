"""The notebook API: a sweep or any PEFT LoRA adapter in, the analysis DataFrames out.

    import lowrank_lab as ll

    sweep = ll.open_sweep("tests/fixtures/sweep")
    sweep.cells                      # one row per finished cell: spec fields and best metrics
    sweep.phi()                      # φ between ranks and seeds, side A (Hu et al. 2021, Fig. 3, 4)
    sweep.amplification()            # Table 7 per cell, layer and matrix

    adapter = ll.load_adapter("tests/fixtures/sweep/cells/lora-qv-r8-alpha_r-kaiming-seed0/adapter",
                              base="tests/fixtures/sweep/base")
    adapter.updates["L1.q"].svd()    # ΔW = scaling·B·A's SVD, from the factors
    ll.compare(adapter, other)       # {"phi": …, "distances": …}

A sweep's tables are cached as the CLI caches them: the saved table is read when it is current
(made from today's spec and finished cells), else computed, saved under SWEEP/analysis/ and read
back; in memory once per object. An adapter's tables are computed on first use and kept.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lowrank_lab.analysis import external as ax
from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.store import files
from lowrank_lab.store import tables as st
from lowrank_lab.store.external_adapter import ExternalAdapter
from lowrank_lab.workflow import external as wx
from lowrank_lab.workflow import sweep as ws


class Sweep:
    """A saved sweep (``lowrank-lab rank-sweep``'s folder). `base`: where to read W0 from instead of
    the model its spec names (e.g. a sweep trained on another machine)."""

    def __init__(self, path: str | Path, base: str | Path | None = None):
        self.path = Path(path)
        if not st.is_sweep(self.path):
            raise files.RunError(f"{self.path}: not a sweep folder (no manifest); for one adapter use load_adapter")
        self.base = None if base is None else str(base)
        self._tables: dict[tuple[str, str], pd.DataFrame] = {}

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}, {len(st.done_cells(self.path))} finished cells)"

    def table(self, name: str, side: str = "A") -> pd.DataFrame:
        """Cached table `name` (``store.tables.TABLES``), of `side` for the φ tables."""
        if (name, side) not in self._tables:
            self._tables[name, side] = ws.table(self.path, name, side, self.base)
        return self._tables[name, side]

    @property
    def cells(self) -> pd.DataFrame:
        """One row per finished cell: cell, task, method, targets, r, alpha, scaling_rule, init,
        seed, the main metric and every dev metric of its best evaluation, parameter counts."""
        return self.table(st.RESULTS)

    def results(self) -> pd.DataFrame:
        return self.table(st.RESULTS)

    def phi(self, side: str = "A") -> pd.DataFrame:
        """φ(i, j) between ranks at one seed, between seeds at one rank, and a random pair (Sec. 7.2)."""
        return self.table(st.PHI, side)

    def phi_w0(self, side: str = "A") -> pd.DataFrame:
        """φ between W0's top singular directions and ΔW's (App. H.3, Fig. 8)."""
        return self.table(st.PHI_W0, side)

    def amplification(self) -> pd.DataFrame:
        """‖UᵀW0Vᵀ‖_F for ΔW's, W0's and random directions, and ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F (Table 7, App. H.4)."""
        return self.table(st.AMPLIFICATION)

    def spectrum(self) -> pd.DataFrame:
        """Singular values σ_n and cumulative energy of every ΔW (LoRA and full fine-tuning)."""
        return self.table(st.SPECTRUM)

    def spectrum_metrics(self) -> pd.DataFrame:
        """Stable rank, effective rank, rank_90 per matrix."""
        return self.table(st.SPECTRUM_METRICS)

    def intruders(self) -> pd.DataFrame:
        """Intruder dimensions of W0 + ΔW against W0, per ε (Shuttleworth et al. 2024)."""
        return self.table(st.INTRUDERS)

    def eckart_young(self) -> pd.DataFrame:
        """Best rank-k error of full fine-tuning's ΔW, the LoRA cells beside it."""
        return self.table(st.ECKART_YOUNG)


class Adapter:
    """One PEFT LoRA adapter read against its base: its updates and the same analyses as a
    sweep's cell (spectrum, φ(W0, ΔW), amplification, intruders)."""

    def __init__(self, name: str, ext: ExternalAdapter, options: ax.AnalysisOptions):
        self.name, self.ext, self.options = name, ext, options
        self._tables: dict[str, dict[str, pd.DataFrame]] = {}

    def __repr__(self) -> str:
        return f"Adapter({self.name!r}, {len(self.updates)} matrices)"

    @property
    def path(self) -> Path:
        return Path(self.ext.path)

    @property
    def updates(self) -> dict[str, LowRankUpdate]:
        """{label: LowRankUpdate} (A r×k, B d×r, scaling; ``delta_w()``, ``svd()``)."""
        return self.ext.updates

    @property
    def notes(self) -> list[str]:
        return self.ext.notes

    def _analysis(self, side: str) -> dict[str, pd.DataFrame]:
        if side not in self._tables:
            opts = ax.AnalysisOptions(**{**self.options.__dict__, "side": side})
            self._tables[side] = ax.analyze_adapter(self.ext, opts)
        return self._tables[side]

    def phi_w0(self, side: str | None = None) -> pd.DataFrame:
        return self._analysis(side or self.options.side)[st.PHI_W0]

    def amplification(self) -> pd.DataFrame:
        return self._analysis(self.options.side)[st.AMPLIFICATION]

    def spectrum(self) -> pd.DataFrame:
        return self._analysis(self.options.side)[st.SPECTRUM]

    def spectrum_metrics(self) -> pd.DataFrame:
        return self._analysis(self.options.side)[st.SPECTRUM_METRICS]

    def intruders(self) -> pd.DataFrame:
        return self._analysis(self.options.side)[st.INTRUDERS]


def open_sweep(path: str | Path, base: str | Path | None = None) -> Sweep:
    """The sweep saved in folder `path`; `base` overrides the model W0 is read from."""
    return Sweep(path, base)


def load_adapter(path: str | Path, base: str | Path | None = None, original_base: str | Path | None = None,
                 options: ax.AnalysisOptions | None = None) -> Adapter:
    """The PEFT LoRA adapter in folder `path` (a sweep cell's ``adapter/`` too) against `base`
    (default: its adapter_config's base_model_name_or_path). A folder holding several adapters in
    sub-folders is refused with their names: load one of them."""
    found = wx.find([path], base, original_base)
    if len(found) > 1:
        raise files.RunError(f"{path}: holds {len(found)} adapters ({', '.join(n for n, _ in found)}); "
                             "load one sub-folder")
    name, ext = found[0]
    return Adapter(name, ext, options or ax.AnalysisOptions())


def compare(a: Adapter | str | Path, b: Adapter | str | Path, *, base: str | Path | None = None,
            side: str = "A") -> dict[str, pd.DataFrame]:
    """{"phi": φ grids, "distances": one row per shared matrix} between two adapters (objects or
    folders), as ``lowrank-lab compare``; RunError when they adapt no matrix in common."""
    a, b = (x if isinstance(x, Adapter) else load_adapter(x, base) for x in (a, b))
    opts = ax.AnalysisOptions(**{**a.options.__dict__, "side": side})
    frames, _ = ax.compare_many([(a.name, a.ext), (b.name, b.ext)], opts)
    return {key: pd.concat(parts, ignore_index=True) for key, parts in frames.items()}
