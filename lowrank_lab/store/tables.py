"""Analysis tables on disk: a sweep's cached tables under ``<sweep>/analysis/`` and the tables that
``analyze`` / ``compare`` write into a folder, each with a sidecar JSON saying how it was made. No
torch here: present/ and the figure scripts read tables through this module.

Format (stated in every sidecar under "format"): a sweep's tables are Parquet (pyarrow), float64
columns stored exactly and text columns dictionary-encoded, so a table read back is bit-identical
to the one computed and a 30-layer decoder's φ stays compact; ``write_table(csv=True)``
(``--csv``) writes a CSV copy beside it, floats as the shortest decimal that round-trips float64.
Sweeps analysed before Parquet hold CSV tables; they are still read. φ tables hold one side each:
``phi.parquet`` side A (the paper's), ``phi_B.parquet`` side B, …
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from lowrank_lab.store import files, layout
from lowrank_lab.store.layout import analysis_dir

# Cached tables of a sweep: <sweep>/analysis/<name>.parquet with a sidecar <name>.json.
PHI = "phi"  # φ between ranks, between seeds, and a random pair (Fig. 3, 4, 6, 7)
PHI_W0 = "phi_w0"  # φ between W0's and ΔW's directions (Fig. 8)
AMPLIFICATION = "amplification"  # Table 7, App. H.4
SPECTRUM = "spectrum"  # singular values and energy of ΔW (LoRA and full fine-tuning)
SPECTRUM_METRICS = "spectrum_metrics"  # stable rank, effective rank, rank_90 per matrix
INTRUDERS = "intruders"  # intruder dimensions of W0 + ΔW against W0, per ε
ECKART_YOUNG = "eckart_young"  # best rank-k error of full fine-tuning's ΔW, LoRA beside it
RESULTS = "results"  # one row per finished cell
LEARNING_CURVES = "learning_curves"  # training loss against step, every cell
TABLES = (PHI, PHI_W0, AMPLIFICATION, SPECTRUM, SPECTRUM_METRICS, INTRUDERS, ECKART_YOUNG, RESULTS, LEARNING_CURVES)
# After the paper: computed by their own commands (they evaluate models), never by ``report``.
DYNAMICS_PHI = "dynamics_phi"  # φ(A_t, A_final), between ranks and seeds, per snapshot step
DYNAMICS_SPECTRUM = "dynamics_spectrum"  # ‖ΔW_t‖_F, stable/effective rank, rank_90, intruders per step
TRUNCATION = "truncation"  # dev metric of W0 + ΔW_k per cell and k
TRUNCATION_K = "truncation_k"  # the smallest k within 0.5 points, per cell
TRUNCATION_MEDIANS = "truncation_medians"  # medians over seeds with bootstrap intervals
MITIGATION = "mitigation"  # metric and forgetting per cell, intruder definition and λ
MITIGATION_TRADEOFF = "mitigation_tradeoff"  # medians over seeds with bootstrap intervals
MITIGATION_CORRELATION = "mitigation_correlation"  # Spearman's ρ of intruders and forgetting
MITIGATION_SIGN_TESTS = "mitigation_sign_tests"  # paired sign tests of λ < 1 against λ = 1
AFTER_PAPER = {DYNAMICS_PHI: "dynamics", DYNAMICS_SPECTRUM: "dynamics", TRUNCATION: "truncate",
               TRUNCATION_K: "truncate", TRUNCATION_MEDIANS: "truncate", MITIGATION: "mitigate",
               MITIGATION_TRADEOFF: "mitigate", MITIGATION_CORRELATION: "mitigate", MITIGATION_SIGN_TESTS: "mitigate"}
SIDES = ("A", "B", "dW_right", "dW_left")  # the singular bases φ compares (analysis.tables.basis)
SIDED = (PHI, PHI_W0)  # one file per side
COMMAND_OF = {PHI: "subspace", PHI_W0: "subspace", AMPLIFICATION: "amplify", SPECTRUM: "spectrum",
              SPECTRUM_METRICS: "spectrum", INTRUDERS: "spectrum", ECKART_YOUNG: "spectrum", RESULTS: "tables",
              LEARNING_CURVES: "tables", **AFTER_PAPER}

COMMAND_TABLES = {command: tuple(t for t in TABLES if COMMAND_OF[t] == command) for command in dict.fromkeys(COMMAND_OF.values())}

FORMAT = {"name": "parquet", "version": 3,
          "floats": "float64 stored exactly; text columns dictionary-encoded; read back bit-identical"}
CSV_FORMAT = {"name": "csv", "version": 2,
              "floats": "shortest decimal that round-trips float64 (repr); read back bit-identical"}
_INTEGER_COLUMNS = ("layer", "seed", "seed1", "seed2")  # nullable: random panels have no layer, no seed
_TEXT_COLUMNS = ("task", "targets", "lora_targets", "scaling_rule", "init")  # CSV turns "" into NaN
# pandas ≥ 3 parses floats round-trip exactly by default; older ones need to be asked.
_ROUND_TRIP = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


class EmptyTable(FileNotFoundError):
    """A cached table with no rows: the sweep lacks its inputs (figure scripts skip, as when missing)."""


def _check_side(name: str, side: str) -> None:
    if side not in SIDES:
        raise files.RunError(f"side {side!r}: use one of {', '.join(SIDES)}")


def table_file(name: str, side: str = "A") -> str:
    """File stem of a table: ``phi`` for side A, ``phi_B`` for side B; unsided tables ignore `side`."""
    _check_side(name, side)
    return f"{name}_{side}" if name in SIDED and side != "A" else name


def table_path(sweep: Path, name: str, side: str = "A") -> Path:
    """<sweep>/analysis/<name>[_<side>].parquet."""
    return analysis_dir(sweep) / f"{table_file(name, side)}.parquet"


def csv_path(sweep: Path, name: str, side: str = "A") -> Path:
    """The CSV of the same table: a copy written with ``--csv``, or the table of an older sweep."""
    return table_path(sweep, name, side).with_suffix(".csv")


def sidecar_path(sweep: Path, name: str, side: str = "A") -> Path:
    return table_path(sweep, name, side).with_suffix(".json")


def saved_path(sweep: Path, name: str, side: str = "A") -> Path | None:
    """The file the table is read from: its Parquet, else (an older sweep) its CSV, else None."""
    for path in (table_path(sweep, name, side), csv_path(sweep, name, side)):
        if path.exists():
            return path
    return None


def has_table(sweep: Path, name: str, side: str = "A") -> bool:
    return saved_path(sweep, name, side) is not None


def typed(table: pd.DataFrame) -> pd.DataFrame:
    """`table` as written: the nullable integer columns as Int64, the text columns' NaN (how CSV
    reads "") back to "". Every reader of a saved table (CSV, or its Parquet copy) goes through it."""
    for column in _INTEGER_COLUMNS:
        if column in table:
            table[column] = table[column].astype("Int64")
    for column in _TEXT_COLUMNS:
        if column in table:
            table[column] = table[column].fillna("")
    return table


def read_csv_table(path: Path) -> pd.DataFrame:
    """A saved table's CSV as written (floats exactly, ``typed``); pandas' EmptyDataError when empty."""
    return typed(pd.read_csv(path, **_ROUND_TRIP))


def read_parquet_table(path: Path) -> pd.DataFrame:
    """A saved Parquet table as written (``typed``), dictionary-encoded text back as plain str."""
    table = pd.read_parquet(path)
    for column in table.columns:
        if isinstance(table[column].dtype, pd.CategoricalDtype):
            table[column] = table[column].astype(object)
    return typed(table)


def read_table(sweep: Path, name: str, side: str = "A") -> pd.DataFrame:
    """A cached table of a sweep (Parquet, or an older sweep's CSV); FileNotFoundError naming the
    command that computes it, EmptyTable when it has no rows."""
    path = saved_path(sweep, name, side)
    if path is None:
        option = f" --side {side}" if name in SIDED and side != "A" else ""
        raise FileNotFoundError(f"{table_path(sweep, name, side)}: not computed yet; run "
                                f"`lowrank-lab {COMMAND_OF[name]} {sweep}{option}`")
    try:
        table = read_parquet_table(path) if path.suffix == ".parquet" else read_csv_table(path)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    if table.empty and not len(table.columns):
        raise EmptyTable(f"{path}: empty (the sweep has no cells this table is made from, e.g. no "
                         "saved adapters)")
    return table


def read_sidecar(sweep: Path, name: str, side: str = "A") -> dict:
    return files.read_json(sidecar_path(sweep, name, side))


def table_side(sweep: Path, name: str, side: str = "A") -> str | None:
    """Which singular basis the saved table `name` (file of `side`) holds, from its sidecar; None
    for a table that has no side (amplification, spectra, …) or was never computed."""
    if name not in SIDED or not has_table(sweep, name, side):
        return None
    return read_sidecar(sweep, name, side).get("side")


def sides_computed(sweep: Path, name: str = PHI) -> list[str]:
    """The sides for which table `name` (φ or φ_w0) is saved, in SIDES order (A first)."""
    return [s for s in SIDES if has_table(sweep, name, s)]


# ---------------------------------------------------------------------------------------------
# Which cells a table is made from, and whether a saved one is still current


def done_cells(sweep: Path) -> list[str]:
    """Names of the finished cells, in manifest order."""
    return layout.read_manifest(Path(sweep)).names("done")


def is_sweep(folder: Path) -> bool:
    return layout.manifest_path(Path(folder)).is_file()


def is_current(sweep: Path, name: str, side: str = "A") -> bool:
    """The saved table exists in today's format and was made from today's spec.json and finished
    cells (a rerun that adds cells, or a changed spec, makes it stale)."""
    path = sidecar_path(sweep, name, side)
    if not path.exists() or not table_path(sweep, name, side).exists():
        return False
    try:
        meta = files.read_json(path)
    except files.RunError:
        return False
    return (isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("side") == _side_of(name, side)
            and meta.get("sweep_spec") == layout.read_spec(sweep) and meta.get("cells") == done_cells(sweep))


def _side_of(name: str, side: str | None) -> str | None:
    return (side or "A") if name in SIDED else None


# ---------------------------------------------------------------------------------------------
# Writing


def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)  # no float_format: pandas writes repr, which round-trips


def parquet_bytes(table: pd.DataFrame) -> bytes:
    """The table as Parquet (pyarrow; text columns dictionary-encoded, float64 exact, zstd)."""
    buffer = io.BytesIO()
    typed(table.copy()).to_parquet(buffer, index=False, engine="pyarrow", compression="zstd")
    return buffer.getvalue()


def write_table(sweep: Path, name: str, table: pd.DataFrame, options: dict, conventions: dict,
                side: str | None = None, csv: bool = False) -> Path:
    """Write <sweep>/analysis/<name>[_<side>].parquet and its sidecar JSON (the format, the side,
    the sweep spec and the finished cells it was made from, provenance, conventions and
    `options`), and with `csv` a CSV copy beside it (an older CSV of the table is removed, so that
    no stale copy is left); return the Parquet's path."""
    side = _side_of(name, side)
    path = table_path(sweep, name, side or "A")
    spec = layout.read_spec(sweep)
    # where the analysis ran (its dense SVDs: `device`), and the training's provenance beside it
    meta = {"table": name, "side": side, "rows": len(table), "columns": list(table.columns),
            "format": FORMAT, "options": options, "conventions": conventions, "sweep": str(sweep),
            "sweep_spec": spec, "cells": done_cells(sweep), "provenance": files.provenance(options.get("device", "cpu")),
            "training_provenance": spec.get("provenance")}
    data = parquet_bytes(table)
    files.atomic_write(path, lambda f: f.write(data))
    if csv:
        files.write_text(path.with_suffix(".csv"), _csv(table))
    else:
        path.with_suffix(".csv").unlink(missing_ok=True)
    files.write_json(path.with_suffix(".json"), meta)
    return path


def write_folder_table(out: Path, name: str, table: pd.DataFrame, sidecar: dict,
                       markdown: str | None = None) -> list[Path]:
    """<out>/<name>.csv, <name>.md when `markdown` is given, and the sidecar <name>.json (`sidecar`
    plus table, rows, columns, format and provenance): the tables of ``analyze`` and ``compare``."""
    out = Path(out)
    paths = [out / f"{name}.csv"]
    files.write_text(paths[0], _csv(table))
    if markdown is not None:
        paths.append(out / f"{name}.md")
        files.write_text(paths[-1], markdown)
    paths.append(out / f"{name}.json")
    files.write_json(paths[-1], {"table": name, "rows": len(table), "columns": list(table.columns),
                                 "format": FORMAT, **sidecar, "provenance": files.provenance("cpu")})
    return paths

