"""Exported results: a sweep's analysis tables in the compact form committed to the repository,
``<folder>/data/<table>.parquet`` (zstd) each beside ``<folder>/data/<table>.json``, its sidecar
(the sweep's resolved spec, its finished cells, conventions, provenance, which rows were kept and
the model's layers). figures/export_results.py writes them, figures/render_results.py and
figures/check_results.py read them; the device scripts carry a sweep's analysis tables back as
Parquet copies of their CSVs (``parquet_copy``), which ``read_analysis`` reads as the CSV.

No torch here: the figure scripts read these without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lowrank_lab.store import files
from lowrank_lab.store import tables as st

DATA = "data"  # <folder>/data/ holds the exported tables
FORMAT = "parquet (zstd)"


def data_dir(folder: Path) -> Path:
    return Path(folder) / DATA


def table_path(folder: Path, name: str) -> Path:
    return data_dir(folder) / f"{name}.parquet"


def sidecar_path(folder: Path, name: str) -> Path:
    return data_dir(folder) / f"{name}.json"


def has(folder: Path, name: str) -> bool:
    return table_path(folder, name).exists()


def names(folder: Path) -> list[str]:
    """The tables exported into `folder`, sorted."""
    return sorted(p.stem for p in data_dir(folder).glob("*.parquet"))


def write(folder: Path, name: str, table: pd.DataFrame, sidecar: dict) -> Path:
    """<folder>/data/<name>.parquet and its sidecar (`sidecar` plus rows_kept and format)."""
    path = table_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(path, lambda f: table.to_parquet(f, compression="zstd", index=False))
    files.write_text(sidecar_path(folder, name),
                     json.dumps({**sidecar, "rows_kept": len(table), "format": FORMAT}, indent=1,
                                ensure_ascii=False) + "\n")
    return path


def read(folder: Path, name: str) -> pd.DataFrame:
    """An exported table as the store wrote it (``tables.typed``); RunError naming the file when absent."""
    path = table_path(folder, name)
    if not path.exists():
        raise files.RunError(f"{path}: not in the exported results")
    return st.typed(pd.read_parquet(path))


def read_sidecar(folder: Path, name: str) -> dict:
    return files.read_json(sidecar_path(folder, name))


def layers_of(table: pd.DataFrame) -> list[int]:
    """The 0-based layers a table has rows for (its `layer` column), sorted."""
    return sorted(int(v) for v in table["layer"].dropna().unique()) if "layer" in table else []


def middle_layer(folder: Path, name: str) -> int:
    """The middle layer of the model, ``layers[(n − 1) // 2]`` (the paper's 48th of 96), from the
    sidecar of exported table `name`; RunError naming the sidecar when it records no layers."""
    layers = read_sidecar(folder, name).get("layers")
    if not layers:
        raise files.RunError(f"{sidecar_path(folder, name)}: no 'layers' (export the sweep again)")
    return int(layers[(len(layers) - 1) // 2])


def parquet_copy(csv: Path) -> Path:
    """A cached analysis table's CSV beside itself as Parquet (zstd), read back as the CSV."""
    table = st.read_csv_table(csv)
    out = Path(csv).with_suffix(".parquet")
    files.atomic_write(out, lambda f: table.to_parquet(f, compression="zstd", index=False))
    return out


def read_analysis(analysis: Path, name: str) -> pd.DataFrame:
    """A sweep's cached table `name` from its analysis folder: the Parquet the analyses write, else
    (a sweep analysed before Parquet) its CSV."""
    csv, parquet = Path(analysis) / f"{name}.csv", Path(analysis) / f"{name}.parquet"
    return st.read_parquet_table(parquet) if parquet.exists() else st.read_csv_table(csv)
