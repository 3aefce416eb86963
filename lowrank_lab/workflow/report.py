"""``lowrank-lab report`` and ``lowrank-lab tables``, and the figure scripts: read the cached tables
(``store.tables``), draw every entry of the registry (``present``), write the files
(``store.figures``) — everything is rendered first and written last, so that a failing command
leaves no part of its output. Importing this module loads no torch (the figure scripts use it to
read a CSV and save a PNG); computing missing tables does, inside ``workflow.sweep``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from lowrank_lab.present import markup, registry, tables
from lowrank_lab.present import report as text
from lowrank_lab.present.entry import Entry, View
from lowrank_lab.present.select import MissingData
from lowrank_lab.store import figures as out
from lowrank_lab.store import layout
from lowrank_lab.store import tables as st

REPORT_WIDTH = 1060  # CSS pixels for the widest figure; every other figure at the same scale


def read_frames(sweeps: Sequence[Path], names: Iterable[str], side: str = "A"
                ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """{name: table} (one sweep's, or several concatenated) and {name: why it is missing}."""
    frames, missing = {}, {}
    for name in names:
        try:
            frames[name] = pd.concat([st.read_table(s, name, side if name in st.SIDED else "A") for s in sweeps],
                                     ignore_index=True)
        except FileNotFoundError as err:  # EmptyTable too: the sweep has no cells it is made from
            missing[name] = str(err)
    return frames, missing


def draw(entry: Entry, frames: dict[str, pd.DataFrame], missing: dict[str, str], view: View = View()):
    """(figure or table, None) or (None, why it is skipped)."""
    absent = [missing[t] for t in entry.needs if t in missing]
    if absent:
        return None, absent[0]
    try:
        return entry.render({t: frames[t] for t in entry.needs}, view), None
    except MissingData as err:
        return None, str(err)


def entry_files(entry: Entry, drawn) -> dict[str, bytes | str]:
    """{file name: content}: a figure's PNG and PDF; a table's Markdown, LaTeX and CSV, and the
    paper's numbers beside it (<name>_paper.*) when the entry has them."""
    if entry.kind == "figure":
        return {out.figure_file(entry.name, fmt): data for fmt, data in out.figure_bytes(drawn).items()}
    files = out.table_files({fmt: tables.render(drawn, fmt) for fmt in out.TABLE_FORMATS}, entry.name)
    if entry.paper_table is not None:
        files.update(out.table_files({fmt: tables.render(entry.paper_table, fmt) for fmt in out.TABLE_FORMATS},
                                     f"{entry.name}_paper"))
    return files


def _results(sweep: Path) -> None:
    """Bring the results table up to date (cheap: the cells' summaries; no model, no torch)."""
    if not st.is_current(sweep, st.RESULTS):
        from lowrank_lab.workflow.sweep import compute_results

        compute_results(sweep)


def write_tables(sweep: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Every table of the registry as <analysis>/tables/<name>.{md,tex,csv}, and the results table; a
    table whose inputs are missing is named with the way to get it. Returns the paths."""
    sweep = Path(sweep)
    _results(sweep)
    frames, missing = read_frames([sweep], registry.needed_tables(registry.TABLES))
    contents = {}
    for entry in registry.TABLES:
        drawn, skipped = draw(entry, frames, missing)
        if skipped:
            echo(f"{entry.name} ({entry.paper}) skipped: {skipped}; to get it: {entry.skip_note}")
        else:
            contents.update(entry_files(entry, drawn))
    return [st.table_path(sweep, st.RESULTS)] + out.write_outputs(out.tables_dir(sweep), contents)


def _provenance(sweep: Path, sides: Sequence[str]) -> tuple[dict, str]:
    """(conventions, a provenance line) from the sidecar of a computed table."""
    for name in (st.PHI, st.AMPLIFICATION, st.SPECTRUM, st.RESULTS):
        if st.has_table(sweep, name):
            meta = st.read_sidecar(sweep, name)
            prov = meta.get("provenance", {})
            line = (f"Tables computed with lowrank-lab {prov.get('lowrank_lab')}, git {prov.get('git_commit')}, "
                    f"torch {prov.get('torch')}; base model {meta.get('options', {}).get('base_model')}; "
                    f"φ sides computed: {', '.join(sides) or 'none'}.")
            return meta.get("conventions") or {}, line
    return {}, "No analysis table computed."


def write_report(sweep: Path, base_model: str | None = None, echo: Callable[[str], None] = print,
                 side: str = "A", csv: bool = False, modules: Sequence[str] = (), device: str = "auto"
                 ) -> tuple[Path, Path]:
    """<analysis>/report/report.md and report.html with every figure (PNG, PDF) beside them, and
    the tables under <analysis>/tables; missing or stale analysis tables are computed first. The φ
    figures show `modules` (default: q and v, the paper's)."""
    sweep, view = Path(sweep), View(side=side, modules=tuple(modules) or None)
    from lowrank_lab.workflow.sweep import ensure_tables

    ensure_tables(sweep, base=base_model, echo=echo, sides=(side,), csv=csv, device=device)  # --side B: its φ too
    frames, missing = read_frames([sweep], registry.needed_tables(), side)
    shown, figures, table_contents = [], {}, {}
    for entry in registry.ENTRIES:
        drawn, skipped = draw(entry, frames, missing, view)
        if skipped:
            shown.append(text.Shown(entry, skipped=skipped))
        elif entry.kind == "figure":
            figures.update(entry_files(entry, drawn))
            shown.append(text.Shown(entry, image=out.figure_file(entry.name)))
        else:
            table_contents.update(entry_files(entry, drawn))
            shown.append(text.Shown(entry, table=drawn))
    sides = st.sides_computed(sweep)
    convention, provenance = _provenance(sweep, sides)
    md = text.markdown(sweep.name, layout.read_spec(sweep), frames, shown, view, sides, convention, provenance)
    html = markup.to_html(md, f"lowrank-lab report: {sweep.name}", _widths(figures))
    out.write_outputs(out.tables_dir(sweep), table_contents)
    paths = out.write_outputs(out.report_dir(sweep), {**figures, **out.report_files(md, html)})
    return paths[-2], paths[-1]


def _widths(files: dict[str, bytes]) -> dict[str, int]:
    """{png name: CSS width}: one scale for every figure, the widest REPORT_WIDTH pixels at most."""
    pngs = out.png_widths(files)
    if not pngs:
        return {}
    scale = min(2 / 3, REPORT_WIDTH / max(pngs.values()))  # 2/3: 150 dpi shown at 100 px per inch
    return {name: round(width * scale) for name, width in pngs.items()}


# ---------------------------------------------------------------------------------------------
# The scripts in figures/: one registry entry each


def script_args(entry: Entry, argv: Sequence[str] | None = None, several: bool = False) -> argparse.Namespace:
    """SWEEP [--out DIR] [--layer N] [--side S]; with `several`, SWEEP [SWEEP …] (one task each,
    e.g. Table 2's columns) as `sweeps`. `sweeps` is always the list. --help shows the entry's
    caption and the tables it reads."""
    needs = ", ".join(f"analysis/{t}" for t in entry.needs)
    parser = argparse.ArgumentParser(
        description=f"{entry.paper}: {entry.title}. {entry.caption_for()}",
        epilog=f"Reads {needs} of each SWEEP (`lowrank-lab report SWEEP` computes them); writes "
               f"{entry.name}.{'png and .pdf' if entry.kind == 'figure' else 'md, .tex and .csv'}.")
    parser.add_argument("sweeps", type=Path, nargs="+" if several else 1, metavar="SWEEP",
                        help="sweep directory (with analysis/ computed)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: SWEEP/analysis/figures)")
    parser.add_argument("--layer", type=int, default=None, help="layer to show (default: the middle one)")
    parser.add_argument("--side", default="A", choices=st.SIDES, help="φ side to show (default: A, the paper's)")
    parser.add_argument("--module", action="append", default=None, metavar="KIND",
                        help="matrix kind of the φ figures (q, k, v, o, gate, up, down, qkv; repeat for several; "
                             "default: q and v, the paper's)")
    args = parser.parse_args(argv)
    args.out = args.out or out.figures_dir(args.sweeps[0])
    return args


def run_script(name: str, argv: Sequence[str] | None = None, several: bool = False) -> list[Path]:
    """A figure script's main: read the entry's tables, draw it, save it under --out; a missing
    table or missing cells print one line (what is missing and how to get it) and write nothing."""
    entry = registry.entry(name)
    args = script_args(entry, argv, several)
    frames, missing = read_frames(args.sweeps, entry.needs, args.side)
    drawn, skipped = draw(entry, frames, missing,
                          View(layer=args.layer, side=args.side, modules=tuple(args.module) if args.module else None))
    if skipped:
        print(f"{name}: skipped: {skipped}; to get it: {entry.skip_note}", file=sys.stderr)
        return []
    return out.write_outputs(args.out, entry_files(entry, drawn))


def sweep_summary(sweep: Path) -> str:
    """The text table printed at the end of ``rank-sweep`` (``present.tables.sweep_table``)."""
    _results(Path(sweep))
    try:
        return tables.sweep_table(st.read_table(sweep, st.RESULTS))
    except FileNotFoundError:
        return "no finished cells"
