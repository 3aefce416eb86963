"""``lowrank-lab analyze`` and ``compare``: PEFT adapter folders in (``store.adapters``), the tables
of ``analysis.external`` and their figures (``present``) out, written through ``store``.

Adapters are told apart by their resolved folder and named for people: the folder given (or, for
a sweep cell's ``adapter/`` folder, the cell's name), then the sub-folder an adapter is in
("run", "run/seed1"); names that would still clash get their parent folders in front. Figures
are titled with the adapters and matrices they show. Everything is computed and drawn before the
first file is written, so an error leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from lowrank_lab.analysis import external as ax
from lowrank_lab.present import curves, plotting
from lowrank_lab.present.select import MissingData, first_module, middle_layer, shown_modules
from lowrank_lab.present.tables import to_markdown
from lowrank_lab.store import files, layout
from lowrank_lab.store import figures as store_figures
from lowrank_lab.store import tables as st
from lowrank_lab.store.adapters import find_adapters, load_all
from lowrank_lab.store.external_adapter import ExternalAdapter

MARKDOWN_MAX_ROWS = 2000  # longer tables (φ grids, spectra) are CSV only


# ---------------------------------------------------------------------------------------------
# Which adapters, by which names


def named_folder(root: Path) -> Path:
    """The folder an adapter given as `root` is named after: `root` itself, or for the ``adapter/``
    folder of a sweep cell, the cell's folder."""
    root = Path(root).resolve()
    return root.parent if layout.adapter_dir(root.parent) == root else root


def _names(found: list[tuple[Path, ExternalAdapter]]) -> list[str]:
    """Readable, unique names: the named folder (+ "/sub-folder"); names that clash get the
    folders above in front ("sweepA/cells/cell" …), and an index as the last resort."""
    folders = [named_folder(root) for root, _ in found]
    subs = [Path(ext.path).resolve().relative_to(root.resolve()) for root, ext in found]
    tails = ["" if sub == Path(".") or layout.adapter_dir(root.resolve()) == Path(ext.path).resolve()  # a cell's adapter
             else f"/{sub.as_posix()}" for sub, (root, ext) in zip(subs, found, strict=True)]
    names = [f"{f.name}{t}" for f, t in zip(folders, tails, strict=True)]
    for depth in range(1, 6):
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            return names
        names = [("/".join(f.parts[-depth - 1:]) + t) if n in clashes else n
                 for n, f, t in zip(names, folders, tails, strict=True)]
    return [f"{n}#{i}" if names.count(n) > 1 else n for i, n in enumerate(names, 1)]


def find(roots: Sequence[str | Path], base: str | Path | None = None,
         original_base: str | Path | None = None) -> list[tuple[str, ExternalAdapter]]:
    """(name, adapter) for every adapter in `roots` (each folder and its sub-folders), each folder
    once however often it is given, in order."""
    found: list[tuple[Path, ExternalAdapter]] = []
    seen = set()
    for root in map(Path, roots):
        if not find_adapters(root) and st.is_sweep(root):
            raise files.RunError(f"{root}: is a sweep, not an adapter folder; analyse it with "
                                 f"`lowrank-lab report {root}` (or subspace / amplify / spectrum), or "
                                 f"give one cell's adapter: {root}/cells/<cell>/adapter")
        for ext in load_all(root, base, original_base):
            key = Path(ext.path).resolve()
            if key not in seen:
                seen.add(key)
                found.append((root, ext))
    return list(zip(_names(found), (ext for _, ext in found), strict=True))


def describe(name: str, ext: ExternalAdapter) -> dict:
    return {"name": name, "path": str(Path(ext.path).resolve()), "base": str(ext.base), "config": ext.config,
            "notes": ext.notes}


def _notes(found: list[tuple[str, ExternalAdapter]]) -> list[str]:
    return [f"{n}: {note}" for n, e in found for note in e.notes]


# ---------------------------------------------------------------------------------------------
# Figures: rendered in memory, written with the tables


def _plot_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the figure functions group by (method, targets, seed), for one adapter: a
    plotting copy, never written to the tables."""
    targets = ",".join(dict.fromkeys(frame["module"].astype(str))) if "module" in frame else ""
    return frame.assign(method="lora", targets=targets, seed=0)


def _render(drawings: dict, notes: list[str]) -> dict[str, bytes]:
    """{file name: bytes} of each drawing that has something to show; a note for each skipped."""
    out = {}
    for name, draw in drawings.items():
        try:
            images = store_figures.figure_bytes(draw())
        except (MissingData, KeyError, ValueError, IndexError) as err:
            notes.append(f"figure {name} skipped: {err}")
            continue
        out.update({store_figures.figure_file(name, fmt): data for fmt, data in images.items()})
    return out


def adapter_drawings(tables: dict[str, pd.DataFrame], name: str, side: str) -> dict:
    """Spectrum, φ(W0, ΔW), amplification and intruder figures of one adapter, on the matrices it
    adapts (ΔWq when it has one, else its first), titled with the adapter and the matrix."""
    t = {key: _plot_columns(frame) for key, frame in tables.items() if not frame.empty}
    safe = name.replace("/", "__")
    drawings = {}
    if st.SPECTRUM in t:
        m = first_module(t[st.SPECTRUM])
        layer = middle_layer(t[st.SPECTRUM].loc[t[st.SPECTRUM]["module"] == m, "layer"].dropna())
        drawings["spectrum"] = lambda: curves.spectrum_figure(
            t[st.SPECTRUM], t[st.SPECTRUM_METRICS], layer, module=m,
            title=f"Spectrum of ΔW{m} at layer L{layer}, adapter {name} (ΔW includes its scaling)")
    if st.PHI_W0 in t:
        m = first_module(t[st.PHI_W0])
        layer = middle_layer(t[st.PHI_W0].loc[t[st.PHI_W0]["module"] == m, "layer"].dropna())
        drawings["phi_w0"] = lambda: plotting.phi_w0_figure(
            t[st.PHI_W0].assign(side=side), layer, module=m, side=side,
            title=f"φ(W{m}, ΔW{m}) at layer L{layer}, adapter {name} (side {side})")
    if st.AMPLIFICATION in t:
        drawings["amplification"] = lambda: curves.amplification_figure(
            t[st.AMPLIFICATION], paper=False, title=f"Amplification factor per matrix, adapter {name}")
    if st.INTRUDERS in t:
        drawings["intruders"] = lambda: curves.intruders_figure(
            t[st.INTRUDERS], title=f"Intruder dimensions of W0 + ΔW, adapter {name}")
    return {f"{safe}-{key}": draw for key, draw in drawings.items()}


def compare_drawings(parts: list[pd.DataFrame]) -> dict:
    """Fig. 4's layout (same ranks) or Fig. 3's (two ranks) for each compared pair, titled with
    the two adapters, the layer and the side."""
    drawings = {}
    for part in parts:
        n1, n2, side = part["adapter1"].iloc[0], part["adapter2"].iloc[0], part["side"].iloc[0]
        same_r = bool((part["r1"] == part["r2"]).all())
        t = _plot_columns(part).assign(comparison="seeds" if same_r else "ranks", seed1=0, seed2=int(same_r))
        modules = shown_modules(t)
        layer = middle_layer(t.loc[t["module"].isin(modules), "layer"].dropna())
        title = f"φ between {n1} and {n2}: layer L{layer}, side {side}"
        draw = plotting.phi_seeds_figure if same_r else plotting.phi_ranks_figure
        kwargs = {"random_panel": False} if same_r else {}
        drawings[f"{n1}-vs-{n2}-phi".replace("/", "__")] = (
            lambda t=t, draw=draw, layer=layer, side=side, modules=modules, title=title, kwargs=kwargs:
            draw(t, [layer], side=side, modules=modules, title=title, **kwargs))
    return drawings


# ---------------------------------------------------------------------------------------------
# The commands


def write_folder_tables(out: Path, frames: dict[str, pd.DataFrame], sidecar: dict) -> list[Path]:
    """Each frame as <out>/<name>.csv (+ .md up to MARKDOWN_MAX_ROWS rows) with its sidecar."""
    paths = []
    for name, frame in frames.items():
        markdown = to_markdown(frame) if len(frame) <= MARKDOWN_MAX_ROWS else None
        paths += st.write_folder_table(out, name, frame, sidecar, markdown)
    return paths


def analyze(adapter: str | Path, base: str | Path | None = None, original_base: str | Path | None = None,
            out: str | Path | None = None, opts: ax.AnalysisOptions = ax.AnalysisOptions(),
            figures: bool = True) -> tuple[list[Path], list[str]]:
    """Analyse every adapter in folder `adapter` (itself and its sub-folders) against its base;
    write the tables (one file per table, an ``adapter`` column) and figures under `out`
    (default ADAPTER/analysis). Returns (paths written, the adapters' notes)."""
    root = Path(adapter)
    out = Path(out) if out is not None else layout.analysis_dir(root)
    found = find([root], base, original_base)
    notes = _notes(found)
    joined, per = ax.analyze_many(found, opts)
    images = {}
    if figures:
        for name, _ in found:
            images.update(_render(adapter_drawings(per[name], name, opts.side), notes))
    sidecar = {"options": {**asdict(opts), "base": None if base is None else str(base),
                           "original_base": None if original_base is None else str(original_base)},
               "conventions": ax.CONVENTIONS, "adapters": [describe(n, e) for n, e in found]}
    paths = write_folder_tables(out, joined, sidecar)
    return paths + store_figures.write_outputs(out / "figures", images), notes


def compare(adapters: Sequence[str | Path], base: str | Path | None = None, out: str | Path | None = None,
            opts: ax.AnalysisOptions = ax.AnalysisOptions(), figures: bool = True) -> tuple[list[Path], list[str]]:
    """Compare every pair of the adapters found in `adapters` (each a folder, sub-folders included):
    φ grids and ΔW distances per shared matrix, in one table each with columns adapter1, adapter2;
    under `out` (default FIRST/analysis/compare). Returns (paths written, the adapters' notes)."""
    roots = [Path(p) for p in adapters]
    found = find(roots, base)
    if len(found) < 2:
        raise files.RunError(f"{', '.join(map(str, roots))}: compare needs two different adapters, "
                             f"found {len(found)}")
    out = Path(out) if out is not None else layout.analysis_dir(roots[0]) / "compare"
    frames, notes = ax.compare_many(found, opts)
    notes = _notes(found) + notes
    images = _render(compare_drawings(frames[ax.COMPARE_PHI]), notes) if figures else {}
    sidecar = {"options": {**asdict(opts), "base": None if base is None else str(base)},
               "conventions": ax.CONVENTIONS, "adapters": [describe(n, e) for n, e in found]}
    joined = {key: pd.concat(parts, ignore_index=True) for key, parts in frames.items()}
    paths = write_folder_tables(out, joined, sidecar)
    return paths + store_figures.write_outputs(out / "figures", images), notes
