"""Draw every figure and table of the registry from a committed results folder, for a sweep whose
analyses came back from another machine as tables only (figures/export_results.py's data/).

    python figures/render_results.py figures/results/NAME [--layer N]

Reads NAME/data/<table>.parquet and writes each figure's PNG and each table's Markdown into NAME/;
an entry whose tables are not there (say φ, when the adapters stayed on the device) is named with
what it needs and not drawn. The data are the exported rows (export_results.py's docstring says
which were kept), so a figure drawn here shows what the committed files hold.
"""

import argparse
from pathlib import Path

import pandas as pd

from lowrank_lab.present import registry
from lowrank_lab.present.entry import View
from lowrank_lab.store import exported
from lowrank_lab.store import figures as out
from lowrank_lab.workflow.report import draw, entry_files


def read_data(folder: Path) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """({table: frame} of every needed table in folder/data, {table: why it is missing})."""
    frames, missing = {}, {}
    for name in registry.needed_tables():
        if exported.has(folder, name):
            frames[name] = exported.read(folder, name)
        else:
            missing[name] = f"{exported.table_path(folder, name)}: not in the committed results"
    return frames, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--layer", type=int, default=None, help="layer to show (default: the middle one)")
    args = ap.parse_args()
    frames, missing = read_data(args.folder)
    contents = {}
    for entry in registry.ENTRIES:
        drawn, skipped = draw(entry, frames, missing, View(layer=args.layer))
        if skipped:
            print(f"{entry.name}: not drawn: {skipped}")
            continue
        files = entry_files(entry, drawn)
        contents.update({name: data for name, data in files.items() if name.endswith((".png", ".md"))})
    for path in out.write_outputs(args.folder, contents):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
